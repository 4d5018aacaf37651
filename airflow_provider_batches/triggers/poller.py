"""One poller per connection per triggerer process: every trigger of the connection waits on it.

A triggerer runs hundreds of :class:`~airflow_provider_batches.triggers.batches.AnthropicBatchTrigger`
on one event loop. Each used to poll its own batches with its own client; now they register a
:class:`Watch` with the connection's :class:`ConnectionPoller`, which learns the status of every
watched batch in one sweep (:func:`~airflow_provider_batches.waiting.survey_plan`: listing pages
of 1,000 batches, as many as cover the oldest pending one, a GET only for what the listing does not
reach), every :data:`~airflow_provider_batches.policy.SWEEP_INTERVAL` seconds while anything is
pending (stretched to stay within a share of the connection's request budget:
:func:`~airflow_provider_batches.policy.sweep_gap`), run by the hook's runner (``arun_plan(...,
budget=True)``, which paces it by the connection's request budget as it does every wait), and wakes
each trigger when its wait is over.

Nothing here outlives its watchers: the poller is created by the first trigger of a connection
(in the running event loop) and closed with its client when the last one leaves. A trigger keeps
no state a fresh triggerer could not rebuild from its kwargs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from airflow_provider_batches.client_core import ClientSettings
from airflow_provider_batches.errors import BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.policy import WaitEvent, sweep_gap
from airflow_provider_batches.waiting import Survey, WaitProgress, judge_round, survey_plan

__all__ = ["ConnectionPoller", "Watch", "release", "watch"]

#: A newcomer's first round waits this long, so triggers started together share it.
GATHER_SECONDS = 0.5

log = logging.getLogger(__name__)


def _new_future() -> asyncio.Future[WaitEvent]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class Watch:
    """One trigger's wait, as the poller keeps it: its progress, when it is next looked at, its
    outcome, and the context of the trigger's task (Airflow routes a trigger's log lines to its task's
    log by it). ``interval`` is the wait's poll interval: one shorter than the sweep interval makes
    the sweeps more frequent; a longer one does not slow them (a look costs a share of a page)."""

    progress: WaitProgress
    interval: float
    not_found_grace_until: float | None
    log: logging.Logger
    due: float
    done: asyncio.Future[WaitEvent] = field(default_factory=_new_future)
    observed: asyncio.Event = field(default_factory=asyncio.Event)
    context: contextvars.Context = field(default_factory=contextvars.copy_context)

    def finish(self, event: WaitEvent) -> None:
        if not self.done.done():
            self.done.set_result(event)


class ConnectionPoller:
    """Polls every batch its watches wait for, one sweep at a time, on one client and one budget.

    A sweep looks at every pending batch and serves every watch; the next one starts
    :func:`~airflow_provider_batches.policy.sweep_gap` seconds after it began, for as long as anything
    is pending: no back-off, since a quiet sweep costs what a busy one does and the budget, not the
    wait's age, is what must not be overspent. A newcomer joins the connection's rhythm instead of
    forcing a sweep.
    """

    def __init__(self, hook: AnthropicHook, settings: ClientSettings) -> None:
        self.hook = hook
        self.settings = settings
        self.watches: set[Watch] = set()
        self.watchers: Counter[str] = Counter()  # per batch, how many watches wait for it
        self.created: dict[str, datetime] = {}
        self.direct: set[str] = set()  # batches the listing did not reach: fetched one by one
        self.rounds = 0
        self._last_round = -math.inf
        self._last_cost = 0  # requests the last sweep made
        self._wakeup = asyncio.Event()
        #: When the poller next looks at its watches by itself (inf: idle; -inf: in a round). Only a
        #: newcomer due earlier wakes it, so thousands arriving do not each cost a scan of all.
        self._planned = math.inf
        self._task: asyncio.Task[None] | None = None

    def watch(
        self,
        batch_ids: Sequence[str],
        *,
        poll_interval: float,
        not_found_grace_until: float | None,
        log: logging.Logger,
    ) -> Watch:
        now = time.monotonic()
        entry = Watch(
            progress=WaitProgress(list(batch_ids)),
            interval=poll_interval,
            not_found_grace_until=not_found_grace_until,
            log=log,
            due=max(now + GATHER_SECONDS, self._last_round + self._gap(poll_interval, self._last_cost)),
        )
        self.watches.add(entry)
        self.watchers.update(set(entry.progress.batch_ids))
        if entry.due < self._planned:
            self._wakeup.set()
        if self._task is None or self._task.done():
            # In a context of its own: not the one of the trigger that happened to start it.
            self._task = contextvars.Context().run(asyncio.get_running_loop().create_task, self._run())
        return entry

    def unwatch(self, entry: Watch) -> None:
        """Forget ``entry``, and what the poller knows of batches no other watch waits for (in time
        independent of how many watches stay: thousands of triggers leave at once)."""
        if entry not in self.watches:
            return
        self.watches.remove(entry)
        for batch_id in set(entry.progress.batch_ids):
            self.watchers[batch_id] -= 1
            if self.watchers[batch_id] <= 0:
                del self.watchers[batch_id]
                self.created.pop(batch_id, None)
                self.direct.discard(batch_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.hook.aclose()

    async def _run(self) -> None:
        try:
            while True:
                live = [entry for entry in self.watches if not entry.done.done()]
                if not live:
                    self._planned = math.inf
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                delay = min(entry.due for entry in live) - time.monotonic()
                if delay > 0:
                    await self._sleep_unless_woken(delay)
                    continue
                self._planned = -math.inf
                await self._round(live)
        except Exception as exc:  # every trigger gets one event, even when the poller breaks
            log.exception("The coalesced poller stopped")
            for entry in self.watches:
                entry.finish(entry.progress.error(f"polling stopped: {type(exc).__name__}: {exc}"))

    async def _sleep_unless_woken(self, delay: float) -> None:
        """Wait ``delay`` seconds or until a newcomer wakes the poller. Not ``asyncio.wait_for``: on
        Python 3.10 and 3.11 it drops a cancel that arrives as the wake-up does, and ``close`` (the
        last trigger leaving) then waited forever."""
        self._planned = time.monotonic() + delay
        self._wakeup.clear()
        timer = asyncio.get_running_loop().call_later(delay, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            timer.cancel()

    async def _round(self, watches: list[Watch]) -> None:
        started = time.monotonic()
        self._last_round = started
        self.rounds += 1
        pending = {batch_id for entry in watches for batch_id in entry.progress.pending()}
        listed = {batch_id: self.created.get(batch_id) for batch_id in pending if batch_id not in self.direct}
        direct = sorted(pending & self.direct)
        survey: Survey = await self.hook.arun_plan(
            partial(survey_plan, listed=listed, direct=direct), budget=True
        )
        for batch_id, outcome in survey.outcomes.items():  # a round outlives watches that leave in it
            if isinstance(outcome, MessageBatch) and batch_id in self.watchers:
                self.created[batch_id] = outcome.created_at
                if batch_id in survey.unreached:
                    self.direct.add(batch_id)
        self._last_cost = survey.requests
        next_sweep = started + self._gap(min(entry.interval for entry in watches), survey.requests)
        for entry in watches:
            entry.context.run(self._judge, entry, survey, next_sweep)  # logs land in the trigger's own log

    def _gap(self, wanted: float, cost: int) -> float:
        """Seconds between sweeps costing ``cost`` requests, for watches asking ``wanted``."""
        rate = self.hook.budget_rate(self.settings)
        return sweep_gap(wanted=wanted, cost=cost, requests_per_minute=rate)

    def _judge(self, entry: Watch, survey: Survey, next_sweep: float) -> None:
        if entry.done.done():
            return
        outcomes = {batch_id: survey.outcomes[batch_id] for batch_id in entry.progress.pending()}
        entry.progress.observe(outcomes)  # for the trigger's progress lines
        try:
            newly_ended, failures = judge_round(
                outcomes, not_found_grace_until=entry.not_found_grace_until, log=entry.log
            )
        except BatchWaitError as exc:
            entry.finish(entry.progress.error(str(exc)))
            return
        event = entry.progress.after_round(newly_ended, failures)
        entry.observed.set()
        if event is not None:
            entry.finish(event)
            return
        entry.due = next_sweep


# -- the process-level registry ---------------------------------------------------------------------

PollerKey = tuple[str, ClientSettings]
_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[PollerKey, ConnectionPoller]] = (
    weakref.WeakKeyDictionary()
)


async def watch(
    hook: AnthropicHook,
    batch_ids: Sequence[str],
    *,
    poll_interval: float,
    not_found_grace_until: float | None,
    log: logging.Logger,
) -> tuple[ConnectionPoller, Watch]:
    """Register a wait with the poller of ``hook``'s connection in this event loop (made if none)."""
    settings = await hook.aget_settings()
    pollers = _POLLERS.setdefault(asyncio.get_running_loop(), {})
    key = (hook.conn_id, settings)
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = ConnectionPoller(hook, settings)
    entry = poller.watch(
        batch_ids,
        poll_interval=poll_interval,
        not_found_grace_until=not_found_grace_until,
        log=log,
    )
    return poller, entry


async def release(poller: ConnectionPoller, entry: Watch) -> None:
    """The trigger is done (or cancelled): forget its watch; the last one out closes the poller."""
    poller.unwatch(entry)
    if poller.watches:
        return
    pollers = _POLLERS.get(asyncio.get_running_loop(), {})
    for key, registered in list(pollers.items()):
        if registered is poller:
            del pollers[key]
    await poller.close()


def pollers_in_this_loop() -> list[ConnectionPoller]:
    """The live pollers of the running event loop (tests, diagnostics)."""
    return list(_POLLERS.get(asyncio.get_running_loop(), {}).values())
