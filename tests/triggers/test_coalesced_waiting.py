"""Triggers of one connection in one event loop share one poller: served by listing pages, within
the connection's request budget, each woken when its own batches end, rebuilt from kwargs alone."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_batches.client_core import ClientSettings
from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.testing import CONNECTION_ENV_VAR
from airflow_provider_batches.triggers import poller as poller_module
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from airflow_provider_batches.triggers.poller import ConnectionPoller, pollers_in_this_loop
from tests.operators.support import requests

FAR = 10**10
TRIGGERS = 200
TIER_RPM = 50  # the lowest tier's limit, enforced by the emulator
BUDGET_RPM = 40  # the connection's default budget


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_seconds=0, canceling_seconds=0)) as emu:
        conn = {"conn_type": "anthropic_batches", "host": emu.base_url, "password": emu.api_key}
        monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(conn))
        yield emu


def create_batches(emu: Emulator, count: int, *, processing_seconds: float) -> list[str]:
    """Batches that end ``processing_seconds`` after their create; then clean stats and the tier limit."""
    emu.admin.set_config(processing_seconds=processing_seconds)
    hook = AnthropicHook()
    ids = [hook.create_batch(requests(1)).id for _ in range(count)]
    emu.admin.reset()  # stats and rate windows start empty; the batches stay
    emu.admin.set_config(processing_seconds=processing_seconds, requests_per_minute=TIER_RPM)
    return ids


async def first_event(trigger: AnthropicBatchTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events
    return events[0]


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the loop run until ``condition`` holds: the test waits for the state it needs, not a guess."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the awaited state never came"
        await asyncio.sleep(0.01)


def watches_in_this_loop() -> int:
    return sum(len(poller.watches) for poller in pollers_in_this_loop())


def trigger_for(batch_id: str, **options: Any) -> AnthropicBatchTrigger:
    arguments: dict[str, Any] = {"deadline": FAR, "poll_interval": 1.0, "max_poll_interval": 1.0, **options}
    return AnthropicBatchTrigger(batch_ids=[batch_id], **arguments)


async def test_many_triggers_are_served_by_listing_pages_within_the_budget(emulator: Emulator) -> None:
    batch_ids = create_batches(emulator, TRIGGERS, processing_seconds=6)

    started = time.monotonic()
    events = await asyncio.gather(*(first_event(trigger_for(batch_id)) for batch_id in batch_ids))
    waited = time.monotonic() - started

    assert [event["status"] for event in events] == ["success"] * TRIGGERS
    stats = emulator.admin.stats()
    assert set(stats["calls"]) == {"GET /v1/messages/batches"}  # no batch fetched on its own
    assert set(stats["calls"]["GET /v1/messages/batches"]) == {"200"}  # never rate limited
    assert stats["max_calls_in_any_minute"]["all"] <= BUDGET_RPM
    assert waited < 6 + 2 * 60 / BUDGET_RPM + 2  # the end noticed within a budget step or two


async def test_triggers_of_one_connection_share_one_poller_closed_by_the_last(emulator: Emulator) -> None:
    batch_ids = create_batches(emulator, 3, processing_seconds=600)
    tasks = [asyncio.create_task(first_event(trigger_for(batch_id))) for batch_id in batch_ids]
    await until(lambda: watches_in_this_loop() == 3)

    assert len(pollers_in_this_loop()) == 1
    emulator.clock.advance(600)  # the batches end
    await asyncio.gather(*tasks)
    assert pollers_in_this_loop() == []


async def test_each_trigger_wakes_when_its_own_batches_end(emulator: Emulator) -> None:
    emulator.admin.set_config(processing_seconds=2)
    early = AnthropicHook().create_batch(requests(1)).id
    emulator.admin.set_config(processing_seconds=600)
    late = AnthropicHook().create_batch(requests(1)).id
    waiting_long = asyncio.create_task(first_event(trigger_for(late)))

    event = await asyncio.wait_for(first_event(trigger_for(early)), 10)

    assert event["status"] == "success"
    assert not waiting_long.done()
    waiting_long.cancel()
    await asyncio.gather(waiting_long, return_exceptions=True)
    assert pollers_in_this_loop() == []


async def test_a_missing_batch_fails_only_its_own_trigger(emulator: Emulator) -> None:
    batch_ids = create_batches(emulator, 2, processing_seconds=2)
    missing = trigger_for("msgbatch_missing", not_found_grace_until=time.time() - 1)

    good, bad = await asyncio.gather(first_event(trigger_for(batch_ids[0])), first_event(missing))

    assert good["status"] == "success"
    assert bad["status"] == "error"
    assert "msgbatch_missing" in bad["message"]
    assert "not_found_error" in bad["message"]


async def test_the_deadline_still_sends_a_timeout_event(emulator: Emulator) -> None:
    (batch_id,) = create_batches(emulator, 1, processing_seconds=600)

    event = await first_event(trigger_for(batch_id, deadline=time.time() + 1.5))

    assert event["status"] == "timeout"
    assert batch_id in event["message"]


def test_a_fresh_triggerer_rebuilds_the_wait_from_the_kwargs_alone(emulator: Emulator) -> None:
    (batch_id,) = create_batches(emulator, 1, processing_seconds=600)
    classpath, kwargs = trigger_for(batch_id).serialize()

    async def triggerer_dies_mid_wait() -> None:
        task = asyncio.create_task(first_event(trigger_for(batch_id)))
        await until(lambda: [poller.rounds for poller in pollers_in_this_loop()] == [1])  # it has polled
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(triggerer_dies_mid_wait())
    emulator.clock.advance(600)  # the batch ends while no triggerer watches it
    event = asyncio.run(first_event(AnthropicBatchTrigger(**json.loads(json.dumps(kwargs)))))

    assert classpath.endswith("AnthropicBatchTrigger")
    assert event["status"] == "success"


async def test_a_trigger_cancelled_mid_round_leaves_nothing_of_its_batch_in_the_poller(
    emulator: Emulator,
) -> None:
    leaving, staying = create_batches(emulator, 2, processing_seconds=600)
    emulator.admin.set_config(slow_seconds=1.5, next_faults=["slow"])  # the first round's listing is slow
    cancelled = asyncio.create_task(first_event(trigger_for(leaving)))
    waiting = asyncio.create_task(first_event(trigger_for(staying)))
    await until(lambda: [poller.rounds for poller in pollers_in_this_loop()] == [1])  # the slow listing
    (poller,) = pollers_in_this_loop()
    assert poller.rounds == 1

    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    while staying not in poller.created:  # the round ends
        await asyncio.sleep(0.1)

    assert leaving not in poller.created
    assert not waiting.done()  # the other trigger still waits
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_triggers_of_two_connections_each_poll_only_their_own_host(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here,) = create_batches(emulator, 1, processing_seconds=2)
    with Emulator(EmulatorConfig(processing_seconds=2, canceling_seconds=0)) as other:
        conn = {"conn_type": "anthropic_batches", "host": other.base_url, "password": other.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_OTHER", json.dumps(conn))
        there = AnthropicHook("anthropic_other").create_batch(requests(1)).id
        other.admin.reset()

        events = await asyncio.gather(
            first_event(trigger_for(here)), first_event(trigger_for(there, conn_id="anthropic_other"))
        )

        assert [event["status"] for event in events] == ["success", "success"]
        for emu in (emulator, other):  # a batch asked of the wrong host would answer 404
            assert {status for route in emu.admin.stats()["calls"].values() for status in route} == {"200"}


async def test_a_trigger_arriving_as_the_last_one_leaves_is_served_and_no_client_is_left_open(
    emulator: Emulator,
) -> None:
    first, second = create_batches(emulator, 2, processing_seconds=2)
    leaving = asyncio.create_task(first_event(trigger_for(first)))
    await until(lambda: watches_in_this_loop() == 1)
    (old,) = pollers_in_this_loop()
    arriving: list[asyncio.Task[dict[str, Any]]] = []
    old.watches.copy().pop().done.add_done_callback(
        lambda _: arriving.append(asyncio.create_task(first_event(trigger_for(second))))
    )

    await leaving
    event = await asyncio.wait_for(arriving[0], 15)

    assert event["status"] == "success"
    assert old.hook._async_client is None  # the old poller's client was closed, not reused
    assert pollers_in_this_loop() == []


async def test_thousands_of_watches_leave_in_linear_time() -> None:
    """5,000 triggers woken by one round all leave at once; each leaving used to scan every other."""
    poller = ConnectionPoller(AnthropicHook(), ClientSettings(api_key="sk-ant-unused"))
    rhythm: dict[str, Any] = {"poll_interval": 30, "not_found_grace_until": None}
    log = logging.getLogger(__name__)
    watches = [poller.watch([f"msgbatch_{n}"], **rhythm, log=log) for n in range(5000)]  # no await: no round

    started = time.process_time()
    for entry in watches:
        poller.unwatch(entry)
    spent = time.process_time() - started

    await poller.close()
    assert spent < 0.5  # about 5 s when quadratic


async def test_thousands_of_watches_arrive_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triggers arrive one event-loop step apart; each used to wake the poller to scan every watch."""
    monkeypatch.setattr(poller_module, "GATHER_SECONDS", 600)  # no round during the measurement
    poller = ConnectionPoller(AnthropicHook(), ClientSettings(api_key="sk-ant-unused"))
    rhythm: dict[str, Any] = {"poll_interval": 30, "not_found_grace_until": None}
    log = logging.getLogger(__name__)

    started = time.process_time()
    for n in range(5000):
        poller.watch([f"msgbatch_{n}"], **rhythm, log=log)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    spent = time.process_time() - started

    await poller.close()
    assert spent < 1.5  # about 6 s when quadratic


async def test_the_poller_closes_when_its_last_watches_leave_just_after_one_arrived(
    emulator: Emulator,
) -> None:
    """Python 3.10-3.11's ``asyncio.wait_for`` drops a cancel that comes as its awaitable finishes: the
    poller, woken by the newcomer and cancelled in the same step, used to wait forever, and so did
    the trigger closing it."""
    (batch_id,) = create_batches(emulator, 1, processing_seconds=600)
    rhythm: dict[str, Any] = {"poll_interval": 30, "not_found_grace_until": None}
    log = logging.getLogger(__name__)
    poller, first = await poller_module.watch(AnthropicHook(), [batch_id], **rhythm, log=log)
    await asyncio.sleep(0.1)  # the poller waits for the first round
    same, second = await poller_module.watch(AnthropicHook(), [batch_id], **rhythm, log=log)  # wakes it

    await poller_module.release(poller, first)
    await asyncio.wait_for(poller_module.release(same, second), 5)

    assert pollers_in_this_loop() == []


#: Stands for the context Airflow binds in each trigger's task (structlog contextvars): the triggerer
#: routes every log line to the log file of the task whose context it was emitted in.
TASK_OF_TRIGGER: contextvars.ContextVar[str] = contextvars.ContextVar("task_of_trigger", default="none")


class ContextRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((TASK_OF_TRIGGER.get(), record.getMessage()))


async def test_each_trigger_logs_its_batches_in_its_own_tasks_context(emulator: Emulator) -> None:
    batch_ids = create_batches(emulator, 3, processing_seconds=2)

    recorder = ContextRecorder()
    trigger_log = logging.getLogger("tests.trigger_log")
    trigger_log.addHandler(recorder)
    trigger_log.setLevel(logging.INFO)

    async def trigger_task(batch_id: str) -> dict[str, Any]:
        TASK_OF_TRIGGER.set(batch_id)
        trigger = trigger_for(batch_id)
        trigger._log = trigger_log  # a plain logger, so the handler sees the emitting context
        return await first_event(trigger)

    try:
        await asyncio.gather(*(trigger_task(batch_id) for batch_id in batch_ids))
    finally:
        trigger_log.removeHandler(recorder)

    ended = [(context, line) for context, line in recorder.lines if "has ended" in line]
    assert sorted(line.split()[1] for _, line in ended) == sorted(batch_ids)
    assert all(line.startswith(f"Batch {context} ") for context, line in ended), ended


async def test_the_poller_forgets_a_batch_only_when_its_last_watch_is_released(emulator: Emulator) -> None:
    hook = AnthropicHook()
    poller = ConnectionPoller(hook, await hook.aget_settings())
    options: dict[str, Any] = {
        "poll_interval": 60.0,
        "not_found_grace_until": None,
    }
    first = poller.watch(["msgbatch_a"], log=logging.getLogger("first"), **options)
    second = poller.watch(["msgbatch_a"], log=logging.getLogger("second"), **options)
    poller.created["msgbatch_a"] = datetime.now(timezone.utc)
    try:
        poller.unwatch(first)
        assert "msgbatch_a" in poller.created
        poller.unwatch(second)
        assert "msgbatch_a" not in poller.created
    finally:
        await poller.close()


async def test_the_poller_keeps_its_cadence_while_batches_are_pending(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No back-off toward ``max_poll_interval``: a quiet sweep costs what a busy one does."""
    batch_ids = create_batches(emulator, 2, processing_seconds=600)
    emulator.admin.set_config(processing_seconds=600, requests_per_minute=0)
    unbudgeted = {"conn_type": "anthropic_batches", "host": emulator.base_url, "password": emulator.api_key}
    unbudgeted["extra"] = json.dumps({"max_requests_per_minute": 0})
    monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(unbudgeted))
    triggers = [trigger_for(batch_id, poll_interval=0.25, max_poll_interval=60) for batch_id in batch_ids]
    tasks = [asyncio.create_task(first_event(trigger)) for trigger in triggers]
    await until(lambda: [poller.rounds for poller in pollers_in_this_loop()] == [1])

    await asyncio.sleep(3)  # backing off 1.5x from 0.25 s, the poller would look 5 times
    (poller,) = pollers_in_this_loop()
    assert poller.rounds >= 10

    emulator.clock.advance(600)
    assert [event["status"] for event in await asyncio.gather(*tasks)] == ["success", "success"]
