"""AnthropicBatchTrigger: waits in the triggerer until every batch of a job has ended.

Triggers of one connection in one triggerer share a poller (:mod:`.poller`): one async client,
listing pages covering many batches per request, a look every 10 s within the connection's
request budget. A trigger keeps nothing a fresh triggerer could not rebuild from
``serialize()``: the deadline and the 404 grace window are wall-clock epoch seconds. It yields
exactly one event, whose shape :func:`~airflow_provider_batches.policy.parse_wait_event` checks when
the task resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_batches._compat import moved_names
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_PROGRESS_INTERVAL,
    SWEEP_INTERVAL,
    WaitEvent,
    WaitSpec,
    WaitStatus,
)
from airflow_provider_batches.triggers import poller as poller_module

__all__ = ["AnthropicBatchTrigger"]

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(__name__, {"parse_wait_event": "airflow_provider_batches.policy"})

#: Bound on the cancel calls ``on_kill`` makes (the triggerer also bounds ``on_kill``).
CANCEL_TIMEOUT_SECONDS = 20.0
#: A trigger whose deadline has passed (a triggerer started late) still looks once, this long at most.
LAST_LOOK_SECONDS = 60.0


class AnthropicBatchTrigger(BaseTrigger):
    """Poll every batch of a job until all have ended, the deadline passes or polling cannot go on.

    :param batch_ids: the job's batches.
    :param conn_id: the Anthropic connection; the only thing serialized about it (no secret).
    :param deadline: wall-clock epoch seconds after which a ``timeout`` event is sent.
    :param poll_interval: first wait between polls, in seconds. The connection's shared poller looks
        at every pending batch every ``SWEEP_INTERVAL`` (10 s) seconds, or this often when shorter,
        within the connection's request budget; it does not back off.
    :param max_poll_interval: kept for the worker-side wait's back-off (and triggers serialized by
        earlier versions); the shared poller does not back off.
    :param not_found_grace_until: epoch seconds until which a 404 counts as transient (fresh batches).
    :param cancel_on_kill: cancel the batches when a user kills the deferred task (the task owns them).
    :param progress_interval: seconds between the progress lines logged while waiting (0: none); they
        say what the shared poller last saw, with no extra call.
    :param label: what the progress lines say the wait is for (``round 1, wave 2 of 4``).
    :param wait_started: wall-clock epoch seconds the wait began (elapsed time survives a new triggerer).

    Tasks build it with :meth:`for_wait` from the same :class:`WaitSpec` their sync wait takes; the
    keyword arguments (and ``serialize()``) stay flat, so a trigger serialized by an earlier version
    is rebuilt as it was.
    """

    def __init__(
        self,
        *,
        batch_ids: Sequence[str],
        conn_id: str = AnthropicHook.default_conn_name,
        deadline: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        not_found_grace_until: float | None = None,
        cancel_on_kill: bool = False,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        label: str = "",
        wait_started: float | None = None,
    ) -> None:
        super().__init__()
        self.batch_ids = normalize_batch_ids(batch_ids, field="batch_ids")
        self.conn_id = conn_id
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.not_found_grace_until = None if not_found_grace_until is None else float(not_found_grace_until)
        self.cancel_on_kill = cancel_on_kill
        self.progress_interval = float(progress_interval)
        self.label = label
        self.wait_started = time.time() if wait_started is None else float(wait_started)

    @classmethod
    def for_wait(
        cls, batch_ids: Sequence[str], spec: WaitSpec, *, conn_id: str, cancel_on_kill: bool = False
    ) -> AnthropicBatchTrigger:
        """The trigger that waits as ``spec`` says (what ``wait_for_batches`` does in the worker)."""
        return cls(
            batch_ids=batch_ids,
            conn_id=conn_id,
            deadline=spec.deadline,
            poll_interval=spec.poll_interval,
            max_poll_interval=spec.max_poll_interval,
            not_found_grace_until=spec.not_found_grace_until,
            cancel_on_kill=cancel_on_kill,
            progress_interval=spec.progress_interval,
            label=spec.label,
        )

    @property
    def spec(self) -> WaitSpec:
        """How this trigger waits (its deserialized arguments)."""
        return WaitSpec(
            deadline=self.deadline,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            not_found_grace_until=self.not_found_grace_until,
            progress_interval=self.progress_interval,
            label=self.label,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "conn_id": self.conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "not_found_grace_until": self.not_found_grace_until,
                "cancel_on_kill": self.cancel_on_kill,
                "progress_interval": self.progress_interval,
                "label": self.label,
                "wait_started": self.wait_started,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._wait(AnthropicHook(self.conn_id))
        except Exception as exc:  # one event, always: the task must not hang on a trigger crash
            event = self._event("error", f"polling stopped: {type(exc).__name__}: {exc}", {})
        yield TriggerEvent(event.to_payload())

    async def _wait(self, hook: AnthropicHook) -> WaitEvent:
        """Wait on the connection's shared poller (see :mod:`.poller`) until the event or the deadline."""
        poller, entry = await poller_module.watch(
            hook,
            self.batch_ids,
            poll_interval=self.poll_interval,
            not_found_grace_until=self.not_found_grace_until,
            log=self.log,
        )
        self.log.info(
            "Waiting for %d batch(es) to end%s: looked at every %.0f s at most, with the connection's "
            "other triggers in this triggerer, within its request budget",
            len(self.batch_ids),
            f" ({self.label})" if self.label else "",
            min(self.poll_interval, SWEEP_INTERVAL),
        )
        progress = entry.progress
        progress.label, progress.progress_interval = self.label, self.progress_interval
        progress.started = self.wait_started
        progress.next_report = self.wait_started + self.progress_interval
        progress.report_if_due(self.log, time.time())  # catch up, once, after a triggerer restart
        try:
            while True:  # one progress line per interval, from what the poller saw: no extra call
                now = time.time()
                if now >= self.deadline:
                    break
                try:
                    event = await asyncio.wait_for(
                        asyncio.shield(entry.done), min(self.deadline - now, progress.seconds_to_report(now))
                    )
                except TimeoutError:
                    progress.report_if_due(self.log, time.time())
                    continue
                if event.status == "success":
                    self.log.info("%s", progress.describe(time.time(), ended=True))
                return event
            if not entry.observed.is_set():  # a past deadline (a late triggerer): look once before giving up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry.observed.wait(), LAST_LOOK_SECONDS)
            return entry.done.result() if entry.done.done() else entry.progress.timeout()
        finally:
            await poller_module.release(poller, entry)

    def _event(self, status: WaitStatus, message: str, counts: dict[str, dict[str, int]]) -> WaitEvent:
        return WaitEvent(status, list(self.batch_ids), message, dict(counts))

    async def on_kill(self) -> None:
        """A user killed the deferred task (Airflow 3.3+): cancel the batches, if the task owns them."""
        if not self.cancel_on_kill:
            return
        hook = AnthropicHook(self.conn_id)
        try:
            for batch_id in self.batch_ids:
                try:
                    await asyncio.wait_for(hook.acancel_batch(batch_id), CANCEL_TIMEOUT_SECONDS)
                    self.log.info("Canceled batch %s: its task was killed", batch_id)
                except Exception as exc:
                    self.log.warning("Could not cancel batch %s: %s", batch_id, exc)
        finally:
            await hook.aclose()
