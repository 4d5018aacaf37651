"""Waiting for batches to end, written once for the worker (sync) and the triggerer (async).

The policy (which failures are transient, back-off, deadline, when to give up) lives in plans of
the same kind as :mod:`airflow_provider_batches.client_core`'s: generators that yield ``Send`` and
``Sleep`` effects. Each poll is a sub-plan (:func:`poll_plan`) with the client's own retries. No
I/O here: the hook runs them (``AnthropicHook.wait_for_batches`` in the worker, the shared poller
through ``arun_plan`` in the triggerer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_batches import models, policy
from airflow_provider_batches._compat import moved_names, warn_deprecated
from airflow_provider_batches.client_core import (
    ClientSettings,
    Plan,
    Sleep,
    get_batch_plan,
    list_page_plan,
)
from airflow_provider_batches.errors import BatchWaitError
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.policy import (
    WAIT_STATUSES,
    WaitSpec,
    WaitStatus,
    is_rate_limited,
)

if TYPE_CHECKING:
    from airflow_provider_batches.policy import WaitEvent

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(
    __name__,
    {
        "COUNT_FIELDS": "airflow_provider_batches.models",
        "DEFAULT_MAX_POLL_INTERVAL": "airflow_provider_batches.policy",
        "DEFAULT_POLL_INTERVAL": "airflow_provider_batches.policy",
        "DEFAULT_PROGRESS_INTERVAL": "airflow_provider_batches.policy",
        "WaitEvent": "airflow_provider_batches.policy",
        "is_transient": "airflow_provider_batches.policy",
        "raise_for_wait_event": "airflow_provider_batches.policy",  # imported here before
    },
)

__all__ = [
    "WAIT_STATUSES",
    "Survey",
    "WaitProgress",
    "WaitSpec",
    "WaitStatus",
    "describe_elapsed",
    "judge_round",
    "poll_plan",
    "poll_round",
    "survey_plan",
    "wait_for_batches",
    "wait_plan",
]

DEFAULT_TIMEOUT = 24 * 60 * 60.0
#: The deferral's own timeout lies this far past the trigger's deadline, so the trigger's clean
#: timeout event (which cancels the batches) normally comes first.
DEFER_TIMEOUT_MARGIN_SECONDS = 600.0
#: The API has been seen to answer 404 for a batch seconds after its create: tolerated this long.
NOT_FOUND_GRACE_SECONDS = 60.0
#: Each quiet poll waits this much longer than the last, up to the cap.
BACKOFF_FACTOR = 1.5
#: Rounds in a row in which a poll failed transiently before the wait gives up.
MAX_CONSECUTIVE_ERRORS = 30

RoundResult = tuple[dict[str, dict[str, int]], int]


def next_interval(current: float, cap: float) -> float:
    """The wait after ``current``: a little longer each quiet poll, never over ``cap``."""
    return min(current * BACKOFF_FACTOR, cap)


def poll_plan(settings: ClientSettings, batch_id: str) -> Plan[MessageBatch | Exception]:
    """One poll: the batch, or the error the fetch ended with (the wait decides what it means)."""
    try:
        return (yield from get_batch_plan(settings, batch_id))
    except Exception as exc:
        return exc


def judge_round(
    outcomes: Mapping[str, MessageBatch | Exception],
    *,
    not_found_grace_until: float | None,
    log: logging.Logger,
) -> RoundResult:
    """What one round's polls mean: the counts of the batches that have ended, and how many polls
    failed transiently (a rate-limited poll is not a failure: the budget slows down instead).

    Raises :class:`BatchWaitError` on a failure that waiting longer will not cure (auth, not found).
    """
    ended: dict[str, dict[str, int]] = {}
    failures = 0
    for batch_id, outcome in outcomes.items():
        if isinstance(outcome, Exception):
            if not policy.is_transient(outcome, now=time.time(), not_found_grace_until=not_found_grace_until):
                raise BatchWaitError(f"polling batch {batch_id} failed: {outcome}") from outcome
            if is_rate_limited(outcome):
                log.info("Polling batch %s was rate limited, will try again: %s", batch_id, outcome)
                continue
            log.warning("Polling batch %s failed, will try again: %s", batch_id, outcome)
            failures += 1
        elif outcome.is_ended:
            ended[batch_id] = outcome.request_counts.as_dict()
            log.info("Batch %s has ended: %s", batch_id, ended[batch_id])
        else:  # debug: a triggerer runs hundreds of these every few seconds
            log.debug("Batch %s is %s", batch_id, outcome.processing_status)
    return ended, failures


def poll_round(
    settings: ClientSettings,
    batch_ids: Sequence[str],
    *,
    not_found_grace_until: float | None,
    log: logging.Logger,
    progress: WaitProgress | None = None,
) -> Plan[RoundResult]:
    """Poll each batch once (see :func:`judge_round` for what the answers mean); ``progress`` sees the
    answers (for its progress lines)."""
    outcomes: dict[str, MessageBatch | Exception] = {}
    for batch_id in batch_ids:
        outcomes[batch_id] = yield from poll_plan(settings, batch_id)
    if progress is not None:
        progress.observe(outcomes)
    return judge_round(outcomes, not_found_grace_until=not_found_grace_until, log=log)


def describe_elapsed(seconds: float) -> str:
    """``1h02m05s``, ``4m10s``, ``12s``: how long a wait has lasted."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class WaitProgress:
    """One wait's progress across rounds, and when it is over; the worker's plan and the
    triggerer's coalesced poller both keep one per wait."""

    batch_ids: list[str]
    ended: dict[str, dict[str, int]] = field(default_factory=dict)
    failed_rounds: int = 0
    #: What the progress lines say the wait is for (``round 2, wave 3 of 5``); empty: nothing.
    label: str = ""
    #: Seconds between progress lines (0: none).
    progress_interval: float = policy.DEFAULT_PROGRESS_INTERVAL
    #: Wall-clock epoch seconds the wait began (a trigger rebuilt in a new triggerer keeps it).
    started: float = field(default_factory=time.time)
    #: The last status and counts seen of each batch (from the polls the wait makes anyway).
    latest: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)
    next_report: float = 0.0

    def __post_init__(self) -> None:
        self.next_report = self.started + self.progress_interval

    def observe(self, outcomes: Mapping[str, MessageBatch | Exception]) -> None:
        for batch_id, outcome in outcomes.items():
            if isinstance(outcome, MessageBatch):
                self.latest[batch_id] = (outcome.processing_status, outcome.request_counts.as_dict())

    def seconds_to_report(self, now: float) -> float:
        """Seconds until the next progress line is due (inf: no progress lines)."""
        return max(0.0, self.next_report - now) if self.progress_interval > 0 else float("inf")

    def report_if_due(self, log: logging.Logger, now: float) -> bool:
        """Log a progress line when one is due (one per interval, whatever the poll rhythm)."""
        if self.progress_interval <= 0 or now < self.next_report:
            return False
        log.info("%s", self.describe(now))
        while self.next_report <= now:
            self.next_report += self.progress_interval
        return True

    def describe(self, now: float, *, ended: bool = False) -> str:
        """One line: batches per status, requests per result type, elapsed time, round and wave."""
        statuses: dict[str, int] = {}
        counts = dict.fromkeys(models.COUNT_FIELDS, 0)
        for batch_id in self.batch_ids:
            if batch_id in self.ended:
                status, batch_counts = "ended", self.ended[batch_id]
            else:
                status, batch_counts = self.latest.get(batch_id, ("not yet seen", {}))
            statuses[status] = statuses.get(status, 0) + 1
            for name in models.COUNT_FIELDS:
                counts[name] += int(batch_counts.get(name, 0))
        batches = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        requests = ", ".join(f"{counts[name]} {name}" for name in models.COUNT_FIELDS)
        where = f" ({self.label})" if self.label else ""
        head = "Ended" if ended else "Still waiting"
        return (
            f"{head}{where} after {describe_elapsed(now - self.started)}: {len(self.batch_ids)} batch(es): "
            f"{batches}; requests: {requests}"
        )

    def pending(self) -> list[str]:
        return [batch_id for batch_id in self.batch_ids if batch_id not in self.ended]

    def after_round(self, newly_ended: Mapping[str, dict[str, int]], failures: int) -> WaitEvent | None:
        """The wait's event once it is over (every batch ended, too many failed rounds), else None."""
        self.ended.update(newly_ended)
        if len(self.ended) == len(self.batch_ids):
            return policy.WaitEvent(
                "success", self.batch_ids, f"{len(self.ended)} batch(es) ended", self.ended
            )
        self.failed_rounds = self.failed_rounds + 1 if failures else 0
        if self.failed_rounds >= MAX_CONSECUTIVE_ERRORS:
            return self.error(f"polling failed {self.failed_rounds} rounds in a row")
        return None

    def error(self, message: str) -> WaitEvent:
        return policy.WaitEvent("error", self.batch_ids, message, self.ended)

    def timeout(self) -> WaitEvent:
        waiting = ", ".join(self.pending())
        message = f"batch(es) {waiting} had not ended by the deadline"
        return policy.WaitEvent("timeout", self.batch_ids, message, self.ended)


def wait_plan(
    settings: ClientSettings, batch_ids: Sequence[str], spec: WaitSpec, *, log: logging.Logger
) -> Plan[WaitEvent]:
    """Poll until every batch has ended, the deadline (epoch seconds) passes, or polling cannot go on.

    Every ``spec.progress_interval`` seconds it logs a progress line from what the polls saw (no
    extra call), and one when the wait ends."""
    label = spec.label
    progress = WaitProgress(list(batch_ids), label=label, progress_interval=spec.progress_interval)
    interval = spec.poll_interval
    log.info(
        "Waiting for %d batch(es) to end%s: polling every %.0f s, backing off to %.0f s",
        len(progress.batch_ids),
        f" ({label})" if label else "",
        spec.poll_interval,
        spec.max_poll_interval,
    )
    while True:
        round_started = time.monotonic()
        try:
            newly_ended, failures = yield from poll_round(
                settings,
                progress.pending(),
                not_found_grace_until=spec.not_found_grace_until,
                log=log,
                progress=progress,
            )
        except BatchWaitError as exc:
            return progress.error(str(exc))
        event = progress.after_round(newly_ended, failures)
        if event is not None:
            log.info("%s", progress.describe(time.time(), ended=True))
            return event
        remaining = spec.deadline - time.time()
        if remaining <= 0:
            return progress.timeout()
        progress.report_if_due(log, time.time())
        # Polls keep their rhythm: the time the round took comes off the wait. The sleep is cut at
        # each progress line due, so a line comes every interval even when polls are further apart.
        pause = max(0.0, min(interval - (time.monotonic() - round_started), remaining))
        while pause > 0:
            step = min(pause, progress.seconds_to_report(time.time()) or pause)
            yield Sleep(step)
            pause -= step
            progress.report_if_due(log, time.time())
        interval = next_interval(interval, spec.max_poll_interval)


#: Batches per listing page (the API's most): one request learns the status of up to this many.
LIST_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Survey:
    """One round of the coalesced poller: each batch's status (or the error its poll ended with),
    and the batches the listing did not reach (fetched one by one)."""

    outcomes: dict[str, MessageBatch | Exception]
    unreached: frozenset[str]
    #: Requests the survey made (pages and GETs, retries apart): what the next one will likely cost.
    requests: int = 0


def survey_plan(
    settings: ClientSettings,
    listed: Mapping[str, datetime | None],
    direct: Sequence[str] = (),
    *,
    page_size: int = LIST_PAGE_SIZE,
) -> Plan[Survey]:
    """The status of many batches with as few requests as possible.

    ``listed`` (id to ``created_at`` when known) are looked for in the listing, newest first: pages
    are read while more batches are unseen than pages were read (a page then still costs less than
    a GET per batch), until every batch is seen, the listing ends, or its batches are older than
    every unseen one. The unseen, and ``direct`` (known to lie beyond the listing's reach), get one
    GET each. A failed listing page is each unseen batch's poll failure.
    """
    outcomes: dict[str, MessageBatch | Exception] = {}
    unseen = dict(listed)
    pages = 0
    after_id: str | None = None
    while len(unseen) > max(pages, 1):
        try:
            page = yield from list_page_plan(settings, limit=page_size, after_id=after_id)
        except Exception as exc:
            outcomes.update(dict.fromkeys(unseen, exc))
            unseen.clear()
            pages += 1  # a refused page was a request too
            break
        pages += 1
        for batch in page.data:
            if batch.id in unseen:
                del unseen[batch.id]
                outcomes[batch.id] = batch
        if not (page.has_more and page.last_id and page.data):
            break
        dates = list(unseen.values())
        if dates and None not in dates and page.data[-1].created_at < min(d for d in dates if d):
            break
        after_id = page.last_id
    for batch_id in [*unseen, *direct]:
        outcomes[batch_id] = yield from poll_plan(settings, batch_id)
    return Survey(outcomes, frozenset(unseen), pages + len(unseen) + len(direct))


def wait_for_batches(
    hook: Any, batch_ids: Sequence[str], spec: WaitSpec, *, log: logging.Logger
) -> dict[str, dict[str, int]]:
    """Deprecated: call ``hook.wait_for_batches(batch_ids, spec, log=log)``; the wait's I/O is the hook's."""
    warn_deprecated(
        f"{__name__}.wait_for_batches", "AnthropicHook.wait_for_batches(batch_ids, spec, log=log)"
    )
    counts: dict[str, dict[str, int]] = hook.wait_for_batches(batch_ids, spec, log=log)
    return counts
