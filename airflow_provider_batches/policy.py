"""The provider's decisions, each written once, below the operators, sensor and trigger that apply them.

* the result-type vocabulary (defined by :class:`~airflow_provider_batches.models.RequestCounts`);
* which HTTP statuses are worth repeating, for a call (client_core) and for a poll (the wait);
* which failed poll is transient;
* how a wait polls and when it gives up (:class:`WaitSpec`, and its defaults), and how often the
  triggerer's shared poller looks (:func:`sweep_gap`);
* the wait's outcome (:class:`WaitEvent`), as a trigger sends it and a resumed task checks it, and
  the exception it ends in (:func:`raise_for_wait_event`);
* the outcome policy for ended batches (all canceled skips; nothing succeeded fails; errored or
  expired beyond ``max_error_rate`` fail, else warn);
* whether a batch's results can be downloaded (ended, not archived, a ``results_url``), and where
  the key may be sent for them (the configured API's origin only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, urlsplit

from airflow_provider_batches._compat import AirflowSkipException, conf
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.errors import (
    AnthropicAPIError,
    APIConnectionError,
    BatchNotReadyError,
    BatchOutcomeError,
    BatchTimeoutError,
    BatchWaitError,
    ForeignResultsURLError,
    NotFoundError,
)
from airflow_provider_batches.models import COUNT_FIELDS, RESULT_TYPES, MessageBatch

if TYPE_CHECKING:
    from logging import Logger

__all__ = [
    "COUNT_FIELDS",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_PROGRESS_INTERVAL",
    "RESULT_TYPES",
    "RETRYABLE_STATUSES",
    "SWEEP_BUDGET_SHARE",
    "SWEEP_INTERVAL",
    "WAIT_STATUSES",
    "WaitEvent",
    "WaitSpec",
    "WaitStatus",
    "check_max_error_rate",
    "check_outcome",
    "check_results_origin",
    "check_results_ready",
    "default_deferrable",
    "describe_counts",
    "is_rate_limited",
    "is_retryable_status",
    "is_transient",
    "parse_wait_event",
    "raise_for_wait_event",
    "results_not_ready_reason",
    "sweep_gap",
    "total_counts",
]

# -- retries --------------------------------------------------------------------------------------

#: Statuses below 500 retried when the server does not say otherwise, as the official SDKs do.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """408, 409, 429 and every 5xx (500, 529 overloaded...): the same request may well succeed later."""
    return status in RETRYABLE_STATUSES or status >= 500


def is_transient(exc: BaseException, *, now: float, not_found_grace_until: float | None) -> bool:
    """Whether a failed poll is worth repeating: a retryable status, the network, an early 404."""
    if isinstance(exc, APIConnectionError):
        return True
    if isinstance(exc, AnthropicAPIError) and exc.terminal:  # a spend limit, billing...: waiting won't help
        return False
    if isinstance(exc, NotFoundError):
        return not_found_grace_until is not None and now < not_found_grace_until
    if isinstance(exc, AnthropicAPIError):
        return is_retryable_status(exc.status_code or 0)
    return False


def is_rate_limited(exc: BaseException) -> bool:
    """A 429: the poll was refused for pace, not for the batch; it never counts toward failing a wait."""
    return isinstance(exc, AnthropicAPIError) and exc.status_code == 429 and not exc.terminal


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``: where a wait runs when the task does not say."""
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


# -- the wait's parameters -----------------------------------------------------------------------

#: The first wait between polls (seconds) unless told otherwise.
DEFAULT_POLL_INTERVAL = 30.0
#: The back-off's default cap of a wait polling batch by batch (in the worker, the sensor); the
#: triggerer's shared poller does not back off (:data:`SWEEP_INTERVAL`). The hook's idle connections
#: outlive it, so the next round reuses one.
DEFAULT_MAX_POLL_INTERVAL = 60.0
#: How often a wait logs a progress line (seconds) unless told otherwise.
DEFAULT_PROGRESS_INTERVAL = 300.0
#: How often the triggerer's shared poller looks at every pending batch of a connection (seconds):
#: a look costs one listing page per 1,000 batches, so it looks this often while anything is
#: pending (no back-off), and a batch's end reaches its trigger within about this long.
SWEEP_INTERVAL = 10.0
#: The share of the connection's request budget the sweeps plan to spend: the rest stays for the
#: creates, the results and the worker-side waits on the same key.
SWEEP_BUDGET_SHARE = 0.75


def sweep_gap(*, wanted: float, cost: int, requests_per_minute: int) -> float:
    """Seconds from one sweep's start to the next: :data:`SWEEP_INTERVAL` (or a shorter interval a
    wait asked for), stretched so sweeps costing ``cost`` requests stay within
    :data:`SWEEP_BUDGET_SHARE` of the budget (``requests_per_minute``, 0: none)."""
    gap = min(wanted, SWEEP_INTERVAL)
    if requests_per_minute > 0:
        gap = max(gap, cost * 60.0 / (SWEEP_BUDGET_SHARE * requests_per_minute))
    return gap


@dataclass(frozen=True)
class WaitSpec:
    """How one wait polls and when it gives up, the same in the worker and in the triggerer.

    Times are wall-clock epoch seconds, so a trigger rebuilt in a fresh triggerer keeps them.
    """

    #: After this, the wait ends in a ``timeout`` event.
    deadline: float
    #: The first wait between polls; each quiet poll waits longer, up to ``max_poll_interval``.
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL
    #: Until then a 404 counts as transient (the API has answered it for a batch just created).
    not_found_grace_until: float | None = None
    #: Seconds between progress lines (0: none).
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    #: What the progress lines say the wait is for (``round 2, wave 3 of 5``); empty: nothing.
    label: str = ""


# -- the wait's outcome ---------------------------------------------------------------------------

WaitStatus = Literal["success", "error", "timeout"]
WAIT_STATUSES: tuple[str, ...] = ("success", "error", "timeout")


@dataclass(frozen=True)
class WaitEvent:
    """The outcome of a wait: one for the whole job, whatever the number of batches."""

    status: WaitStatus
    batch_ids: list[str]
    message: str
    request_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "batch_ids": list(self.batch_ids),
            "request_counts": {batch_id: dict(counts) for batch_id, counts in self.request_counts.items()},
            "message": self.message,
        }


def parse_wait_event(event: Any, *, expected_batch_ids: Sequence[str] | None = None) -> WaitEvent:
    """Check the event a deferred task resumes with; anything unexpected fails loudly."""

    def bad(reason: str) -> BatchWaitError:
        return BatchWaitError(f"unexpected trigger event ({reason}): {event!r}")

    if not isinstance(event, Mapping):
        raise bad("not a mapping")
    status = event.get("status")
    if status not in WAIT_STATUSES:
        raise bad(f"status must be one of {', '.join(WAIT_STATUSES)}")
    message = event.get("message")
    if not isinstance(message, str):
        raise bad("message must be a string")
    try:
        batch_ids = normalize_batch_ids(event.get("batch_ids"), field="batch_ids")
    except ValueError as exc:
        raise bad(str(exc)) from None
    if expected_batch_ids is not None and sorted(batch_ids) != sorted(expected_batch_ids):
        raise bad(f"batch_ids differ from the task's {list(expected_batch_ids)}")
    raw_counts = event.get("request_counts") or {}
    if not isinstance(raw_counts, Mapping):
        raise bad("request_counts must map batch ids to counts")
    counts: dict[str, dict[str, int]] = {}
    for batch_id, batch_counts in raw_counts.items():
        if batch_id not in batch_ids or not isinstance(batch_counts, Mapping):
            raise bad(f"request_counts has an entry for {batch_id!r}")
        if not all(isinstance(batch_counts.get(name, 0), int) for name in COUNT_FIELDS):
            raise bad(f"request_counts of {batch_id} must be integers")
        counts[batch_id] = {name: int(batch_counts.get(name, 0)) for name in COUNT_FIELDS}
    if status == "success" and set(counts) != set(batch_ids):
        raise bad("a success event must give the final counts of every batch")
    return WaitEvent(status, batch_ids, message, counts)


def raise_for_wait_event(
    wait: WaitEvent,
    *,
    on_timeout: Callable[[], None] | None = None,
    timeout_error: Callable[[str], Exception] = BatchTimeoutError,
    timeout_message: str | None = None,
) -> dict[str, dict[str, int]]:
    """The final counts of a successful wait; else the exception it ends in: ``timeout_error`` (after
    ``on_timeout``, e.g. canceling the batches the task owns) or :class:`BatchWaitError`."""
    if wait.status == "timeout":
        if on_timeout is not None:
            on_timeout()
        raise timeout_error(timeout_message or wait.message)
    if wait.status == "error":
        raise BatchWaitError(wait.message)
    return wait.request_counts


# -- outcomes -------------------------------------------------------------------------------------


def total_counts(request_counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Request counts of every batch, added up."""
    return {
        name: sum(int(counts.get(name, 0)) for counts in request_counts.values()) for name in COUNT_FIELDS
    }


def describe_counts(totals: Mapping[str, int], batch_count: int) -> str:
    total = sum(totals.values())
    parts = ", ".join(f"{totals[name]} {name}" for name in RESULT_TYPES)
    return f"{parts} of {total} requests in {batch_count} batch(es)"


def check_max_error_rate(value: float | None, *, task_id: str) -> float | None:
    """``max_error_rate`` as given to an operator: None, or a fraction in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"{task_id}: max_error_rate must be a fraction between 0 and 1 (0.05 = up to 5% of the "
            f"requests may end errored or expired), or None; got {value!r}"
        )
    return float(value)


def check_outcome(
    request_counts: Mapping[str, Mapping[str, int]],
    *,
    fail_on_partial_error: bool = False,
    max_error_rate: float | None = None,
    log: Logger,
    errors: Callable[[], str] | None = None,
) -> dict[str, int]:
    """Apply the outcome policy to ended batches.

    * every request canceled: skip;
    * nothing succeeded (some request errored or expired): fail, unless ``max_error_rate=1``;
    * the share of errored + expired requests above ``max_error_rate`` (``fail_on_partial_error`` is
      ``max_error_rate=0``): fail; at or below it (None: any share short of all): a warning;
    * otherwise: info.

    ``errors`` is asked, only when some request failed, for the top error types (see
    :mod:`~airflow_provider_batches.failures`): every failure and warning names them.
    """
    totals = total_counts(request_counts)
    summary = describe_counts(totals, len(request_counts))
    total = sum(totals.values())
    if totals["canceled"] and totals["canceled"] == total:
        raise AirflowSkipException(f"Every request was canceled: {summary}")
    failed = totals["errored"] + totals["expired"]
    if failed:
        details = errors() if errors is not None else ""
        summary += f"; {details}" if details else ""
        limit = 0.0 if fail_on_partial_error else max_error_rate
        rate = failed / total
        if not totals["succeeded"] and (limit is None or rate > limit):
            raise BatchOutcomeError(f"No request succeeded: {summary}")
        if limit is not None and rate > limit:
            raise BatchOutcomeError(
                f"{rate:.1%} of the requests did not succeed, more than max_error_rate={limit:g} allows: "
                f"{summary}"
            )
        log.warning("Some requests did not succeed: %s", summary)
    elif totals["canceled"]:
        log.warning("Some requests were canceled: %s", summary)
    else:
        log.info("Every request succeeded: %s", summary)
    return totals


# -- results readiness ------------------------------------------------------------------------------


def results_not_ready_reason(batch: MessageBatch) -> str | None:
    """Why ``batch`` has no results to download (archived, or not ended), or None when it has."""
    if batch.archived_at is not None:
        return (
            f"batch {batch.id} was archived at {batch.archived_at:%Y-%m-%d %H:%M}Z and its results "
            "are no longer available"
        )
    if not batch.is_ended or not batch.results_url:
        return (
            f"batch {batch.id} is {batch.processing_status}; results exist only once it has ended "
            "(wait with AnthropicBatchSensor or the create operator's wait_for_completion)"
        )
    return None


def check_results_ready(batches: Sequence[MessageBatch]) -> None:
    """Raise :class:`BatchNotReadyError` naming every batch whose results cannot be downloaded."""
    problems = [reason for batch in batches if (reason := results_not_ready_reason(batch))]
    if problems:
        raise BatchNotReadyError("; ".join(problems))


def check_results_origin(base_url: str, results_url: str) -> str:
    """``results_url``, if it lies at the configured API's origin (scheme, host, port); else refuse
    to send the key there."""
    configured, target = urlsplit(base_url), urlsplit(results_url)
    if (configured.scheme, configured.hostname, _port(configured)) != (
        target.scheme,
        target.hostname,
        _port(target),
    ):
        raise ForeignResultsURLError(
            f"results_url {target.scheme}://{target.netloc} is not the configured API origin "
            f"{configured.scheme}://{configured.netloc}; the API key is not sent there. If a gateway "
            "rewrites result URLs, set the connection's host to that gateway."
        )
    return results_url


def _port(parts: SplitResult) -> int | None:
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
