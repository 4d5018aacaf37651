"""Waiting for batches to end, written once for the worker (sync) and the triggerer (async).

The policy (which failures are transient, back-off, deadline, when to give up) lives in plans:
generators that yield :class:`Poll` and :class:`Sleep` steps and decide what follows from the
answers. :func:`run_sync` and :func:`run_async` only perform the steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow_provider_batches.client_core import Sleep
from airflow_provider_batches.errors import (
    AnthropicAPIError,
    APIConnectionError,
    BatchWaitError,
    NotFoundError,
)
from airflow_provider_batches.models import MessageBatch

if TYPE_CHECKING:
    from airflow_provider_batches.hooks.anthropic import AnthropicHook

T = TypeVar("T")

#: The API has been seen to answer 404 for a batch seconds after its create: tolerated this long.
NOT_FOUND_GRACE_SECONDS = 60.0
#: Each quiet poll waits this much longer than the last, up to the cap.
BACKOFF_FACTOR = 1.5
#: Rounds in a row in which a poll failed transiently before the wait gives up.
MAX_CONSECUTIVE_ERRORS = 30

WaitStatus = Literal["success", "error", "timeout"]
WAIT_STATUSES: tuple[str, ...] = ("success", "error", "timeout")
COUNT_FIELDS: tuple[str, ...] = ("processing", "succeeded", "errored", "canceled", "expired")


@dataclass(frozen=True)
class Poll:
    """Fetch this batch; the plan receives the ``MessageBatch`` or the exception the fetch raised."""

    batch_id: str


Step = Poll | Sleep
RoundResult = tuple[dict[str, dict[str, int]], int]


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


def next_interval(current: float, cap: float) -> float:
    """The wait after ``current``: a little longer each quiet poll, never over ``cap``."""
    return min(current * BACKOFF_FACTOR, cap)


def is_transient(exc: BaseException, *, now: float, not_found_grace_until: float | None) -> bool:
    """Whether a failed poll is worth repeating: 408/409/429/5xx, network, an early 404."""
    if isinstance(exc, APIConnectionError):
        return True
    if isinstance(exc, NotFoundError):
        return not_found_grace_until is not None and now < not_found_grace_until
    if isinstance(exc, AnthropicAPIError):
        status = exc.status_code or 0
        return status in (408, 409, 429) or status >= 500
    return False


def poll_round(
    batch_ids: Sequence[str], *, not_found_grace_until: float | None, log: logging.Logger
) -> Generator[Step, Any, RoundResult]:
    """Poll each batch once: the counts of those that have ended, and how many polls failed transiently.

    Raises :class:`BatchWaitError` on a failure that waiting longer will not cure (auth, not found).
    """
    ended: dict[str, dict[str, int]] = {}
    failures = 0
    for batch_id in batch_ids:
        outcome = yield Poll(batch_id)
        if isinstance(outcome, Exception):
            if not is_transient(outcome, now=time.time(), not_found_grace_until=not_found_grace_until):
                raise BatchWaitError(f"polling batch {batch_id} failed: {outcome}") from outcome
            log.warning("Polling batch %s failed, will try again: %s", batch_id, outcome)
            failures += 1
        elif outcome.is_ended:
            ended[batch_id] = outcome.request_counts.as_dict()
            log.info("Batch %s has ended: %s", batch_id, ended[batch_id])
        else:  # debug: a triggerer runs hundreds of these every few seconds
            log.debug("Batch %s is %s", batch_id, outcome.processing_status)
    return ended, failures


def wait_plan(
    batch_ids: Sequence[str],
    *,
    deadline: float,
    poll_interval: float,
    max_poll_interval: float,
    not_found_grace_until: float | None,
    log: logging.Logger,
) -> Generator[Step, Any, WaitEvent]:
    """Poll until every batch has ended, the deadline (epoch seconds) passes, or polling cannot go on."""
    ids = list(batch_ids)
    ended: dict[str, dict[str, int]] = {}
    interval = poll_interval
    failed_rounds = 0
    log.info(
        "Waiting for %d batch(es) to end: polling every %.0f s, backing off to %.0f s",
        len(ids),
        poll_interval,
        max_poll_interval,
    )
    while True:
        round_started = time.monotonic()
        pending = [batch_id for batch_id in ids if batch_id not in ended]
        try:
            newly_ended, failures = yield from poll_round(
                pending, not_found_grace_until=not_found_grace_until, log=log
            )
        except BatchWaitError as exc:
            return WaitEvent("error", ids, str(exc), ended)
        ended.update(newly_ended)
        if len(ended) == len(ids):
            return WaitEvent("success", ids, f"{len(ended)} batch(es) ended", ended)
        failed_rounds = failed_rounds + 1 if failures else 0
        if failed_rounds >= MAX_CONSECUTIVE_ERRORS:
            return WaitEvent("error", ids, f"polling failed {failed_rounds} rounds in a row", ended)
        remaining = deadline - time.time()
        if remaining <= 0:
            waiting = ", ".join(batch_id for batch_id in ids if batch_id not in ended)
            return WaitEvent("timeout", ids, f"batch(es) {waiting} had not ended by the deadline", ended)
        log.debug("%d of %d batch(es) ended; next poll in %.0f s", len(ended), len(ids), interval)
        # Polls keep their rhythm: the time the round took comes off the wait.
        yield Sleep(max(0.0, min(interval - (time.monotonic() - round_started), remaining)))
        interval = next_interval(interval, max_poll_interval)


# -- Drivers: the only I/O ------------------------------------------------------------------------


def run_sync(plan: Generator[Step, Any, T], hook: AnthropicHook) -> T:
    outcome: MessageBatch | Exception | None = None
    try:
        step = plan.send(None)
        while True:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                outcome = None
            else:
                try:
                    outcome = hook.get_batch(step.batch_id)
                except Exception as exc:
                    outcome = exc
            step = plan.send(outcome)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(plan: Generator[Step, Any, T], hook: AnthropicHook) -> T:
    outcome: MessageBatch | Exception | None = None
    try:
        step = plan.send(None)
        while True:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                outcome = None
            else:
                try:
                    outcome = await hook.aget_batch(step.batch_id)
                except Exception as exc:
                    outcome = exc
            step = plan.send(outcome)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
