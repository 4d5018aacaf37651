"""The request budget is applied in one place, the hook's runner: the triggerer's shared poller and a
worker's wait on the same API key draw from one budget, whichever of them sends (against the
emulator, each send timed where it leaves for the socket)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.policy import WaitSpec
from airflow_provider_batches.testing import CONNECTION_ENV_VAR
from airflow_provider_batches.triggers import poller as poller_module
from tests.operators.support import requests

RATE = 120  # requests per minute: one send every half second
SPACING = 60 / RATE
#: Each side alone would poll every 10 ms; only the shared budget keeps them half a second apart.
EAGER = 0.01
LOG = logging.getLogger(__name__)

Sends = list[tuple[str, float]]


class WorkerTransport(httpx.HTTPTransport):
    def __init__(self, sends: Sends) -> None:
        super().__init__()
        self.sends = sends

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sends.append(("worker", time.monotonic()))
        return super().handle_request(request)


class TriggererTransport(httpx.AsyncHTTPTransport):
    def __init__(self, sends: Sends) -> None:
        super().__init__()
        self.sends = sends

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sends.append(("triggerer", time.monotonic()))
        return await super().handle_async_request(request)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_seconds=600, canceling_seconds=0)) as emu:
        conn = {
            "conn_type": "anthropic_batches",
            "host": emu.base_url,
            "password": emu.api_key,
            "extra": {"max_requests_per_minute": RATE},
        }
        monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(conn))
        yield emu


async def test_the_shared_poller_and_a_worker_wait_on_one_key_draw_from_one_budget(
    emulator: Emulator,
) -> None:
    creator = AnthropicHook()
    watched, waited = creator.create_batch(requests(1)).id, creator.create_batch(requests(1)).id
    sends: Sends = []
    rhythm = {"poll_interval": EAGER, "not_found_grace_until": None}
    poller, entry = await poller_module.watch(
        AnthropicHook(async_transport=TriggererTransport(sends)), [watched], **rhythm, log=LOG
    )
    worker = AnthropicHook(transport=WorkerTransport(sends))
    spec = WaitSpec(time.time() + 60, EAGER, EAGER)
    try:
        waiting = asyncio.create_task(asyncio.to_thread(worker.wait_for_batches, [waited], spec))
        while sum(1 for side, _ in sends if side == "triggerer") < 3 or len(sends) < 8:
            await asyncio.sleep(0.05)  # both sides are polling
        emulator.clock.advance(600)  # the batches end
        counts = await asyncio.wait_for(waiting, 30)
        event = await asyncio.wait_for(asyncio.shield(entry.done), 30)
    finally:
        await poller_module.release(poller, entry)

    assert event.status == "success"
    assert counts[waited]["succeeded"] == 1
    times = sorted(at for _, at in sends)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Half a spacing of slack: a send can leave for the socket a little after the budget timed it.
    assert min(gaps) >= SPACING / 2, gaps
    assert len(times) <= (times[-1] - times[0]) / SPACING + 2
    assert {side for side, _ in sends} == {"worker", "triggerer"}
