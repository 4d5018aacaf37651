"""Triggers of one connection in one event loop share one poller: served by listing pages, within
the connection's request budget, each woken when its own batches end, rebuilt from kwargs alone."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.testing import CONNECTION_ENV_VAR
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
    batch_ids = create_batches(emulator, 3, processing_seconds=3)
    tasks = [asyncio.create_task(first_event(trigger_for(batch_id))) for batch_id in batch_ids]
    await asyncio.sleep(1)

    assert len(pollers_in_this_loop()) == 1
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
    (batch_id,) = create_batches(emulator, 1, processing_seconds=4)
    classpath, kwargs = trigger_for(batch_id).serialize()

    async def triggerer_dies_mid_wait() -> None:
        task = asyncio.create_task(first_event(trigger_for(batch_id)))
        await asyncio.sleep(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(triggerer_dies_mid_wait())
    event = asyncio.run(first_event(AnthropicBatchTrigger(**json.loads(json.dumps(kwargs)))))

    assert classpath.endswith("AnthropicBatchTrigger")
    assert event["status"] == "success"


async def test_the_poller_forgets_a_batch_only_when_its_last_watch_is_released(emulator: Emulator) -> None:
    hook = AnthropicHook()
    poller = ConnectionPoller(hook, await hook.aget_settings())
    options: dict[str, Any] = {
        "poll_interval": 60.0,
        "max_poll_interval": 60.0,
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
