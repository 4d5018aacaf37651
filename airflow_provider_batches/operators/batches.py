"""The operator that creates Message Batches (cancel and delete: :mod:`.cancel_delete`, re-exported here).

``AnthropicCreateBatchOperator`` validates and streams the input, splits it into as many batches as
the API limits require, records what it submits in durable per-task state (so a retry re-attaches
instead of paying twice), then waits in the worker or, deferred, in the triggerer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_batches._compat import AirflowTaskTimeout
from airflow_provider_batches.errors import (
    BatchTimeoutError,
    BatchWaitError,
)
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import JobRecord, JobStore, generation_of, job_store_for
from airflow_provider_batches.lineage import create_batch_lineage
from airflow_provider_batches.links import AnthropicBatchLink
from airflow_provider_batches.operators.cancel_delete import (
    AnthropicCancelBatchOperator,
    AnthropicDeleteBatchOperator,
    cancel_batches,
    cancel_if_running,
)
from airflow_provider_batches.operators.submission import (
    ON_INPUT_CHANGE_CHOICES,
    JobSubmission,
    OnInputChange,
)
from airflow_provider_batches.policy import (
    check_outcome,
    default_deferrable,
    describe_counts,
    parse_wait_event,
    total_counts,
)
from airflow_provider_batches.prompts import build_prompt_requests
from airflow_provider_batches.requests import (
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    PreparedJob,
    RequestSource,
    prepare_job,
)
from airflow_provider_batches.structured_output import OutputSchema, StructuredOutput, with_output_schema
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from airflow_provider_batches.waiting import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    DEFER_TIMEOUT_MARGIN_SECONDS,
    NOT_FOUND_GRACE_SECONDS,
    wait_for_batches,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Also importable from here, their earlier home: the cancel and delete operators (now in
#: :mod:`.cancel_delete`) and the outcome and wait helpers (:mod:`~airflow_provider_batches.policy`,
#: :mod:`~airflow_provider_batches.waiting`).
__all__ = [
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "DEFER_TIMEOUT_MARGIN_SECONDS",
    "AnthropicCancelBatchOperator",
    "AnthropicCreateBatchOperator",
    "AnthropicDeleteBatchOperator",
    "cancel_batches",
    "cancel_if_running",
    "check_outcome",
    "default_deferrable",
    "describe_counts",
    "total_counts",
    "wait_for_batches",
]

# -- create ---------------------------------------------------------------------------------------


def job_manifest(record: JobRecord) -> dict[str, Any]:
    """What the create operator returns: small, and accepted by every ``batch_id`` argument.

    ``batches`` gives each batch's request count and custom_id digest, which the results transfer
    checks the results against before publishing anything.
    """
    return {
        "batch_ids": record.batch_ids,
        "request_count": record.request_count,
        "fingerprint": record.fingerprint,
        "batches": record.batches(),
    }


class AnthropicCreateBatchOperator(BaseOperator):
    """Submit requests as one or more Message Batches, wait for them, and return a small manifest.

    Retry-safe: what each try submits is recorded in durable per-task state (``task_state_store``),
    the intent *before* each paid create call and the batch id right after, so a retry re-attaches to
    the batches an earlier try created instead of paying for new ones (see the README's policy).

    :param requests: inline list of ``{"custom_id", "params"}`` requests (small jobs).
    :param requests_path: URI of a JSONL file of requests (any ObjectStoragePath; templated), streamed.
    :param requests_conn_id: connection for the storage of ``requests_path``.
    :param model: model for requests that name none.
    :param conn_id: the Anthropic connection.
    :param wait_for_completion: wait for the batches to end; otherwise return once they are created.
    :param deferrable: wait in the triggerer, freeing the worker slot.
    :param poll_interval: first wait between status polls (seconds); it backs off toward
        ``max_poll_interval``.
    :param timeout: seconds to wait before the batches are canceled and the task fails.
    :param fail_on_partial_error: fail when any request ended errored or expired (else a warning).
    :param max_requests_per_batch: split the input into batches of at most this many requests.
    :param max_bytes_per_batch: ... and at most this many body bytes.
    :param on_input_change: what a retry does when the input differs from what an earlier try
        submitted: ``"fail"`` (default; nothing is sent, the error names the earlier batches) or
        ``"cancel_and_resubmit"`` (cancel the earlier batches still running, submit the new input).
    :param prompts: a prompt list instead of requests: strings, or dicts with ``prompt`` or ``messages``
        and per-prompt fields (see :mod:`airflow_provider_batches.prompts`); custom_ids ``prompt-<index>``.
    :param max_tokens: shared ``max_tokens`` of the prompts' requests.
    :param system: shared system prompt of the prompts' requests.
    :param message_params: other shared Messages parameters of the prompts' requests (``temperature``...).
    :param cancel_on_kill: cancel the batches when the task is killed (else they keep running and a
        later try re-attaches to them).
    :param cancel_on_timeout: cancel the batches when ``timeout`` passes (else they keep running and a
        retry re-attaches to them).
    :param output_schema: a Pydantic model class or JSON schema every answer must follow: put into
        each request (``output_config.format``, or a forced tool call on older models) before validation.
    """

    template_fields: Sequence[str] = (
        "requests",
        "requests_path",
        "requests_conn_id",
        "model",
        "conn_id",
        "max_requests_per_batch",
        "max_bytes_per_batch",
    )
    operator_extra_links = (AnthropicBatchLink(),)
    ui_color = "#f0e4d8"

    def __init__(
        self,
        *,
        requests: Sequence[Mapping[str, Any]] | None = None,
        requests_path: str | None = None,
        requests_conn_id: str | None = None,
        model: str | None = None,
        conn_id: str = AnthropicHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        fail_on_partial_error: bool = False,
        max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH,
        max_bytes_per_batch: int = MAX_BATCH_BYTES,
        output_schema: OutputSchema | None = None,
        on_input_change: OnInputChange = "fail",
        prompts: Sequence[str | Mapping[str, Any]] | None = None,
        max_tokens: int | None = None,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        message_params: Mapping[str, Any] | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_schema = None if output_schema is None else StructuredOutput.of(output_schema)
        if on_input_change not in ON_INPUT_CHANGE_CHOICES:
            raise ValueError(
                f"{self.task_id}: on_input_change must be one of {', '.join(ON_INPUT_CHANGE_CHOICES)}, "
                f"got {on_input_change!r}"
            )
        if [requests, requests_path, prompts].count(None) != 2:
            raise ValueError(
                f"{self.task_id}: pass exactly one of requests=[...], requests_path='...' or prompts=[...]"
            )
        if poll_interval <= 0 or timeout <= 0:
            raise ValueError(f"{self.task_id}: poll_interval and timeout must be positive")
        self.requests = requests
        self.requests_path = requests_path
        self.requests_conn_id = requests_conn_id
        self.model = model
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.timeout = timeout
        self.fail_on_partial_error = fail_on_partial_error
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.on_input_change = on_input_change
        self._owned_batch_ids: list[str] = []
        self._submission: JobSubmission | None = None
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.system = system
        self.message_params = message_params
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self._models: dict[str, int] = {}
        self._completed_manifest: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(self.conn_id)

    def prepare(self) -> PreparedJob:
        """Validate the whole input and plan its batches: no API call, nothing held in memory."""
        requests = self.requests
        if self.prompts is not None:
            requests = build_prompt_requests(
                self.prompts, max_tokens=self.max_tokens, system=self.system, params=self.message_params
            )
        source = RequestSource(
            requests=requests,
            requests_path=self.requests_path,
            requests_conn_id=self.requests_conn_id,
            model=self.model,
        )
        source = with_output_schema(source, self.output_schema)
        return prepare_job(
            source, max_requests=int(self.max_requests_per_batch), max_bytes=int(self.max_bytes_per_batch)
        )

    def execute(self, context: Context) -> dict[str, Any]:
        job = self.prepare()
        self.log.info(
            "Validated %d requests from %s (fingerprint %s, models %s): %d batch(es)",
            job.request_count,
            job.source.describe(),
            job.fingerprint[:16],
            job.requests_per_model,
            len(job.slices),
        )
        self._models = dict(job.requests_per_model)
        store = job_store_for(context)
        self._submission = self.submission_for(context, store, job)
        record = self._submission.run()
        batch_ids = record.batch_ids
        self._owned_batch_ids = batch_ids
        AnthropicBatchLink.persist(context, batch_ids)
        if record.finished:
            return self._outcome(record)
        if not self.wait_for_completion:
            return self._complete(store, record, None)
        deadline = time.time() + self.timeout
        grace_until = time.time() + NOT_FOUND_GRACE_SECONDS
        if self.deferrable:
            self.defer(
                trigger=AnthropicBatchTrigger(
                    batch_ids=batch_ids,
                    conn_id=self.conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    not_found_grace_until=grace_until,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
                kwargs={"manifest": job_manifest(record)},
                timeout=timedelta(seconds=self.timeout + DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        try:
            counts = wait_for_batches(
                self.hook,
                batch_ids,
                deadline=deadline,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                not_found_grace_until=grace_until,
                log=self.log,
            )
        except (BatchTimeoutError, AirflowTaskTimeout):
            if self.cancel_on_timeout:
                cancel_batches(self.hook, batch_ids, reason="the task timed out", log=self.log)
            raise
        return self._complete(store, record, counts)

    def submission_for(self, context: Context, store: JobStore, job: PreparedJob) -> JobSubmission:
        """The retry-safe submission of ``job`` (its ``create`` is the one paid call: tests wrap it)."""
        return JobSubmission(
            self.hook,
            store,
            job,
            log=self.log,
            cancel=lambda ids, reason: cancel_batches(self.hook, ids, reason=reason, log=self.log),
            generation=generation_of(context),
            on_input_change=self.on_input_change,
        )

    def execute_complete(
        self, context: Context, event: Any = None, manifest: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger: check its event against the durable record, then apply the policy."""
        store = job_store_for(context)
        record = store.load()
        if record is None or not record.batch_ids:
            raise BatchWaitError(
                "resumed without a record of the job's batches (task state deleted?); not guessing. "
                f"The batches the deferral was for: {(manifest or {}).get('batch_ids')}"
            )
        if record.finished:
            return self._outcome(record)
        wait = parse_wait_event(event, expected_batch_ids=record.batch_ids)
        if wait.status == "timeout":
            if self.cancel_on_timeout:
                cancel_batches(self.hook, record.batch_ids, reason="the task timed out", log=self.log)
            raise BatchTimeoutError(wait.message)
        if wait.status == "error":
            raise BatchWaitError(wait.message)
        return self._complete(store, record, wait.request_counts)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out in Airflow itself (not in the trigger) also cancels the batches."""
        error = (next_kwargs or {}).get("error")
        if next_method == "__fail__" and str(getattr(error, "value", error)) == "Trigger timeout":
            record = job_store_for(context).load()
            if record is not None and self.cancel_on_timeout:
                cancel_batches(self.hook, record.batch_ids, reason="the deferral timed out", log=self.log)
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The task is killed in the worker (submitting or waiting): cancel the batches it owns."""
        owned = self._submission.batch_ids if self._submission is not None else self._owned_batch_ids
        if owned and self.cancel_on_kill:
            cancel_batches(self.hook, owned, reason="the task was killed", log=self.log)

    # -- outcome ----------------------------------------------------------------------------------

    def _complete(
        self, store: JobStore, record: JobRecord, ended_counts: Mapping[str, Mapping[str, int]] | None
    ) -> dict[str, Any]:
        """Record the job as finished (with its final counts) *before* anything else can fail, so a
        retry after this point returns the same manifest instead of paying again."""
        if ended_counts is not None:
            record.ended_counts = {batch_id: dict(counts) for batch_id, counts in ended_counts.items()}
        record.finished = True
        store.save(record)
        return self._outcome(record)

    def _outcome(self, record: JobRecord) -> dict[str, Any]:
        manifest = job_manifest(record)
        if record.ended_counts is not None:
            totals = check_outcome(
                record.ended_counts, fail_on_partial_error=self.fail_on_partial_error, log=self.log
            )
            manifest = {**manifest, "request_counts": totals}
        self._completed_manifest = manifest
        return manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the requests file in, the batches out, models and counts (None without it)."""
        models = self._models
        if not models and self._completed_manifest and self.model:  # resumed: the input was not re-read
            models = {self.model: self._completed_manifest["request_count"]}
        return create_batch_lineage(
            requests_path=self.requests_path, models=models, manifest=self._completed_manifest
        )
