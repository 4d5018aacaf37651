"""Waiting for batches to end, written once for the worker (sync) and the triggerer (async).

The policy (which failures are transient, back-off, deadline, when to give up) lives in plans of
the same kind as :mod:`airflow_provider_batches.client_core`'s: generators that yield ``Send`` and
``Sleep`` effects. Each poll is a sub-plan (:func:`poll_plan`) with the client's own retries. The
hook runs them (``AnthropicHook.run_plan`` in the worker, ``arun_plan`` in the triggerer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from airflow_provider_batches.client_core import ClientSettings, Plan, Sleep, get_batch_plan
from airflow_provider_batches.errors import BatchTimeoutError, BatchWaitError
from airflow_provider_batches.models import COUNT_FIELDS, MessageBatch
from airflow_provider_batches.policy import WAIT_STATUSES, WaitEvent, WaitStatus, is_transient

if TYPE_CHECKING:
    from airflow_provider_batches.hooks.anthropic import AnthropicHook

__all__ = [
    "COUNT_FIELDS",
    "WAIT_STATUSES",
    "WaitEvent",
    "WaitStatus",
    "is_transient",
    "poll_plan",
    "poll_round",
    "wait_for_batches",
    "wait_plan",
]

DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
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


def poll_round(
    settings: ClientSettings,
    batch_ids: Sequence[str],
    *,
    not_found_grace_until: float | None,
    log: logging.Logger,
) -> Plan[RoundResult]:
    """Poll each batch once: the counts of those that have ended, and how many polls failed transiently.

    Raises :class:`BatchWaitError` on a failure that waiting longer will not cure (auth, not found).
    """
    ended: dict[str, dict[str, int]] = {}
    failures = 0
    for batch_id in batch_ids:
        outcome = yield from poll_plan(settings, batch_id)
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
    settings: ClientSettings,
    batch_ids: Sequence[str],
    *,
    deadline: float,
    poll_interval: float,
    max_poll_interval: float,
    not_found_grace_until: float | None,
    log: logging.Logger,
) -> Plan[WaitEvent]:
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
                settings, pending, not_found_grace_until=not_found_grace_until, log=log
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


def wait_for_batches(
    hook: AnthropicHook,
    batch_ids: Sequence[str],
    *,
    deadline: float,
    poll_interval: float,
    max_poll_interval: float,
    not_found_grace_until: float | None,
    log: logging.Logger,
) -> dict[str, dict[str, int]]:
    """Block until every batch has ended (what AnthropicBatchTrigger does, in the worker); final counts."""
    event = hook.run_plan(
        partial(
            wait_plan,
            batch_ids=batch_ids,
            deadline=deadline,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            not_found_grace_until=not_found_grace_until,
            log=log,
        )
    )
    if event.status == "timeout":
        raise BatchTimeoutError(event.message)
    if event.status == "error":
        raise BatchWaitError(event.message)
    return event.request_counts
