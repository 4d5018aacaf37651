"""``@task.anthropic_batch``: a TaskFlow function whose requests (or prompts) become a Message Batch job.

The function returns or yields requests (``{"custom_id", "params"}``), prompts (strings or prompt
dicts, see :mod:`airflow_provider_batches.prompts`), or a mix. The task then does exactly what
:class:`~airflow_provider_batches.operators.batches.AnthropicCreateBatchOperator` does with every one
of its options (retry safety, splitting, deferrable waiting, outcome policy, cancel choices) and
returns the job manifest.

What the function produces is spooled to a temporary JSONL file and streamed from there, so a
generator of many requests is never held in memory, and never reaches XCom or the rendered template
fields (those are rendered before the function runs; the requests are not a template field).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.prompts import iter_prompt_requests
from airflow_provider_batches.requests import RequestSource

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, TaskDecorator

#: Operator arguments the decorated function replaces.
INPUT_ARGUMENTS = ("requests", "requests_path", "requests_conn_id", "prompts")


class _AnthropicBatchDecoratedOperator(DecoratedOperator, AnthropicCreateBatchOperator):
    """Runs the callable, spools what it returns, then creates and waits as the create operator does."""

    custom_operator_name = "@task.anthropic_batch"
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *(name for name in AnthropicCreateBatchOperator.template_fields if name not in INPUT_ARGUMENTS),
    )
    template_fields_renderers = DecoratedOperator.template_fields_renderers

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        given = [name for name in INPUT_ARGUMENTS if kwargs.get(name) is not None]
        if given:
            raise TypeError(
                f"@task.anthropic_batch: the decorated function returns the requests; "
                f"do not pass {', '.join(given)}"
            )
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            requests=(),  # replaced by the function's output at run time
            **kwargs,
        )
        self.requests = None
        self._context: Context | None = None

    def execute(self, context: Context) -> Any:
        with self._function_output(context):
            return super().execute(context)  # DecoratedOperator -> AnthropicCreateBatchOperator

    def execute_complete(
        self,
        context: Context,
        event: Any = None,
        manifest: Mapping[str, Any] | None = None,
        round: int | None = None,
    ) -> Any:
        with self._function_output(context):
            return super().execute_complete(context, event, manifest, round)

    def resume_submission(self, context: Context, event: Any = None) -> Any:
        with self._function_output(context):
            return super().resume_submission(context, event)

    def source(self) -> RequestSource:
        """The function's output, spooled on first use: a resumed task (held-back slices, re-drive
        rounds) runs the function again, and the job record refuses an output that changed."""
        if self.requests_path is None:
            if self._context is None:
                raise RuntimeError("@task.anthropic_batch: the requests are read only while the task runs")
            context_merge(self._context, self.op_kwargs)
            output = self.python_callable(
                *self.op_args, **determine_kwargs(self.python_callable, self.op_args, self._context)
            )
            self.requests, self.requests_path = None, self._spool(output).as_uri()
        return super().source()

    @contextmanager
    def _function_output(self, context: Context) -> Iterator[None]:
        """While the task runs: the context the function is called with; then the spool is removed."""
        self._context = context
        try:
            yield
        finally:
            if self.requests_path is not None:
                Path(urlsplit(self.requests_path).path).unlink(missing_ok=True)
            self._context, self.requests_path = None, None

    def _spool(self, output: Any) -> Path:
        """The function's requests and prompts as a JSONL file of requests, written as they come."""
        name = getattr(self.python_callable, "__name__", "the function")
        if output is None or isinstance(output, (str, bytes, Mapping)) or not isinstance(output, Iterable):
            raise RequestValidationError(
                f"{name} returned {type(output).__name__}: return (or yield) a list of requests "
                "({'custom_id', 'params'}) or prompts (strings or {'prompt': ...} dicts)"
            )
        requests = iter_prompt_requests(
            output, max_tokens=self.max_tokens, system=self.system, params=self.message_params
        )
        handle, name_on_disk = tempfile.mkstemp(prefix="anthropic-batch-", suffix=".jsonl")
        path = Path(name_on_disk)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                for index, request in enumerate(requests):
                    try:
                        line = json.dumps(request, ensure_ascii=False, allow_nan=False)
                    except (TypeError, ValueError) as exc:
                        raise RequestValidationError(
                            f"item {index} of what {name} returned (custom_id {request.get('custom_id')!r}) "
                            f"is not JSON: {exc}"
                        ) from exc
                    out.write(line + "\n")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


def anthropic_batch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns or yields requests or prompts into a Message Batch job task.

    Takes every argument of ``AnthropicCreateBatchOperator`` except the inputs (``requests``,
    ``requests_path``, ``prompts``): ``model``, ``max_tokens``, ``system``, ``message_params``,
    ``deferrable``, ``timeout``, ``cancel_on_timeout``... Registered as ``@task.anthropic_batch``.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_AnthropicBatchDecoratedOperator,
        **kwargs,
    )
