"""Checked before spend: each distinct model of a job, looked up once in the Models API (free).

A mistyped, unknown or retired model would otherwise be found out only after the batches ran (each
request ending ``errored`` with ``not_found_error``). :func:`check_models` asks
``GET /v1/models/{id}`` once per model and fails before any paid call, naming the lines that use the
model and the closest model ids the API lists, when:

* the API does not know the model, or lists it as ``retired``;
* a request's ``max_tokens`` is above the model's ``max_tokens`` (above 300,000 with the
  ``output-300k-2026-03-24`` beta on the Batch API, where the model supports it);
* the model does not support the Message Batches API (``capabilities.batch.supported``);
* a request asks for manual extended thinking on a model that refuses it
  (``capabilities.thinking.types.enabled``), or sets non-default sampling parameters on a model
  that refuses them (:data:`FIXED_SAMPLING`, a dated table).

A ``deprecated`` model is a warning with its retirement date. When the Models API cannot be reached
or answers an error that is not "not found", the check is skipped with a warning: the batches are
still valid, and the outcome policy names any error types they end with.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from airflow_provider_batches.errors import (
    AnthropicBatchesError,
    NotFoundError,
    RequestValidationError,
)

if TYPE_CHECKING:
    from datetime import datetime
    from logging import Logger

    from airflow_provider_batches.hooks.anthropic import AnthropicHook
    from airflow_provider_batches.models import ModelInfo
    from airflow_provider_batches.requests import ModelUsage

__all__ = ["FIXED_SAMPLING", "OUTPUT_300K_BETA", "check_models", "closest_models"]

#: The Batch API beta that lifts output to 300K tokens on the models that support it (model pages,
#: e.g. https://platform.claude.com/docs/en/models/haiku-5-5/overview, checked 2026-12-04).
OUTPUT_300K_BETA = "output-300k-2026-03-24"
BATCH_OUTPUT_CAP_WITH_BETA = 300_000


#: Models that refuse non-default sampling parameters (temperature, top_p, top_k), with the page that
#: says so (checked 2026-12-04). The Models API has no capability for it, hence this dated table.
FIXED_SAMPLING: Mapping[str, str] = {
    "claude-sonnet-5": "platform.claude.com/docs/en/models/sonnet-5/overview",
    "claude-haiku-5-5": "platform.claude.com/docs/en/models/haiku-5-5/migration-guide",
}


def closest_models(model: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The ids most like ``model`` (a typo's fix), best first."""
    return difflib.get_close_matches(model, known, n=n, cutoff=0.6)


def check_models(
    hook: AnthropicHook,
    usage: Mapping[str, ModelUsage],
    *,
    source: str,
    betas: Sequence[str] = (),
    log: Logger,
) -> dict[str, ModelInfo]:
    """Look each model up once; raise :class:`RequestValidationError` naming every problem found."""
    found: dict[str, ModelInfo] = {}
    unknown: list[str] = []
    problems: list[str] = []
    listed: list[str] | None = None

    def current_ids() -> list[str]:
        nonlocal listed
        if listed is None:
            listed = _current_ids(hook, log)
        return listed

    for model, used in sorted(usage.items()):
        try:
            info = hook.get_model(model)
        except NotFoundError:
            unknown.append(model)
            continue
        except AnthropicBatchesError as exc:
            if getattr(exc, "terminal", False):
                raise  # a spend limit or billing answer: the paid calls would get it too
            log.warning("Could not check model %s before submitting (%s); going on without it", model, exc)
            continue
        found[model] = info
        problems += _problems(model, info, used, betas, log, current_ids)
    if unknown:
        for model in unknown:
            near = closest_models(model, current_ids())
            hint = f"; did you mean {' or '.join(near)}?" if near else "; see GET /v1/models for the ids"
            problems.append(
                f"model {model!r} is not a model the API knows (GET /v1/models/{model} answered 404){hint} "
                f"Used by {_where(usage[model])}"
            )
    if problems:
        raise RequestValidationError(
            f"{len(problems)} problem(s) with the models of {source}, found before any paid call "
            "(nothing was sent):\n- " + "\n- ".join(problems)
        )
    return found


def _problems(
    model: str,
    info: ModelInfo,
    used: ModelUsage,
    betas: Sequence[str],
    log: Logger,
    current_ids: Callable[[], list[str]],
) -> list[str]:
    problems: list[str] = []
    if info.lifecycle == "retired":
        near = closest_models(model, current_ids())
        hint = f", such as {' or '.join(near)}" if near else ""
        problems.append(
            f"model {model!r} is retired (deprecated {_date(info.deprecated_at)}): requests naming it "
            f"fail. Use a current model{hint}. Used by {_where(used)}"
        )
        return problems
    if info.lifecycle == "deprecated":
        log.warning(
            "Model %s is deprecated and retires %s: move the job to a current model",
            model,
            f"on {_date(info.retires_at)}" if info.retires_at else "soon",
        )
    if info.supports("batch") is False:
        problems.append(
            f"model {model!r} does not support the Message Batches API (capabilities.batch): use another "
            f"model or the Messages API. Used by {_where(used)}"
        )
    if used.manual_thinking_line and info.supports("thinking", "types", "enabled") is False:
        problems.append(
            f"{used.manual_thinking_line}, params.thinking: {model} does not accept manual extended "
            'thinking (type "enabled", capabilities.thinking.types.enabled): use {"type": "adaptive"} '
            "(with output_config.effort) or leave thinking out"
        )
    if used.sampling_line and model in FIXED_SAMPLING:
        problems.append(
            f"{used.sampling_line}, params: {model} answers 400 to non-default temperature, top_p or "
            f"top_k ({FIXED_SAMPLING[model]}): remove them"
        )
    limit = info.max_tokens
    if limit is not None and OUTPUT_300K_BETA in betas:
        limit = max(limit, BATCH_OUTPUT_CAP_WITH_BETA)
    if limit is not None and used.max_tokens > limit:
        problems.append(
            f"{used.max_tokens_line}, params.max_tokens: {used.max_tokens:,} is above {model}'s limit of "
            f"{limit:,} output tokens: lower max_tokens to at most {limit:,}"
        )
    return problems


def _current_ids(hook: AnthropicHook, log: Logger) -> list[str]:
    """The ids of the models the API lists and has not retired (suggestions), once per check."""
    try:
        return [model.id for model in hook.list_models() if model.lifecycle != "retired"]
    except AnthropicBatchesError as exc:
        log.warning("Could not list the models to suggest close matches: %s", exc)
        return []


def _where(used: ModelUsage) -> str:
    more = used.requests - len(used.lines)
    tail = f" and {more:,} more" if more > 0 else ""
    return f"{used.requests:,} request(s): {', '.join(used.lines)}{tail}."


def _date(moment: datetime | None) -> str:
    return moment.date().isoformat() if moment is not None else "date unknown"
