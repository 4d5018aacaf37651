"""What the scale benchmarks read from the emulator: calls per route per minute, the most calls in
any sliding minute, and the processing-queue limit that refuses a create with 429."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from airflow_provider_batches.emulator import Emulator, ManualClock
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import api_headers, batch_request, sdk_client


def _list(emu: Emulator) -> httpx.Response:
    return httpx.get(f"{emu.base_url}/v1/messages/batches", headers=api_headers(emu))


def test_stats_count_calls_per_route_per_minute(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock) as emu:
        _list(emu)
        _list(emu)
        clock.advance(61)
        _list(emu)
        per_minute = emu.admin.stats()["calls_per_minute"]
        assert per_minute["GET /v1/messages/batches"] == {"0": 2, "1": 1}
        assert per_minute["all"] == {"0": 2, "1": 1}


def test_stats_give_the_most_calls_in_any_sliding_minute(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock) as emu:
        _list(emu)
        clock.advance(50)
        _list(emu)
        _list(emu)
        clock.advance(20)  # the first call has left the window
        _list(emu)
        assert emu.admin.stats()["max_calls_in_any_minute"]["GET /v1/messages/batches"] == 3


def test_stats_count_429s_per_route(make_emulator: EmulatorFactory) -> None:
    with make_emulator(requests_per_minute=1) as emu:
        _list(emu)
        _list(emu)
        assert emu.admin.stats()["calls"]["GET /v1/messages/batches"] == {"200": 1, "429": 1}


def test_a_create_over_the_processing_queue_limit_answers_429_and_makes_no_batch(
    make_emulator: EmulatorFactory,
) -> None:
    with make_emulator(processing_seconds=600, max_queued_requests=3) as emu:
        client = sdk_client(emu)
        client.messages.batches.create(requests=[batch_request("a"), batch_request("b")])
        with pytest.raises(anthropic.RateLimitError, match="processing queue full.*No batch was created"):
            client.messages.batches.create(requests=[batch_request("c"), batch_request("d")])
        assert len(client.messages.batches.list().data) == 1
        assert emu.admin.stats()["batches_created"] == {"sk-ant-...-key": 1}


def test_the_processing_queue_frees_as_batches_end(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, processing_seconds=600, max_queued_requests=2) as emu:
        client = sdk_client(emu)
        client.messages.batches.create(requests=[batch_request("a"), batch_request("b")])
        clock.advance(600)
        assert client.messages.batches.create(requests=[batch_request("c")]).request_counts.processing == 1
