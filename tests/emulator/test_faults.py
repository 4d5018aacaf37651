"""Fault injection and rate limits: each fault as a client sees it, and seeded replay."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import _base_client

from airflow_provider_batches.emulator import Emulator, ManualClock
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import api_headers, batch_request, sdk_client

#: The SDK's own HTTP library (httpx, or its fork httpx2 in recent SDKs): what a cut stream raises.
SDK_HTTP: Any = getattr(_base_client, "httpx2", httpx)


def _list(emu: Emulator, **headers: str) -> httpx.Response:
    return httpx.get(f"{emu.base_url}/v1/messages/batches", headers=api_headers(emu, **headers))


def _ended_batch_with_results(emu: Emulator, count: int = 50) -> str:
    client = sdk_client(emu)
    batch = client.messages.batches.create(requests=[batch_request(f"r{i}", "x" * 200) for i in range(count)])
    client.messages.batches.retrieve(batch.id)
    return batch.id


def test_rate_limit_answers_429_with_retry_after_and_headers(make_emulator: EmulatorFactory) -> None:
    with make_emulator(requests_per_minute=2) as emu:
        first, second, third = _list(emu), _list(emu), _list(emu)
        assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
        assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert third.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert third.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert third.headers["retry-after"] == "60"
        assert third.json()["error"]["type"] == "rate_limit_error"


def test_rate_limit_window_slides_with_the_clock(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, requests_per_minute=1) as emu:
        assert _list(emu).status_code == 200
        clock.advance(30)
        assert _list(emu).headers["retry-after"] == "30"
        clock.advance(30)
        assert _list(emu).status_code == 200


def test_count_tokens_has_its_own_rate_limit(make_emulator: EmulatorFactory) -> None:
    with make_emulator(requests_per_minute=1, count_tokens_requests_per_minute=3) as emu:
        client = sdk_client(emu)
        for _ in range(3):
            client.messages.count_tokens(
                model="claude-emulator-test", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(anthropic.RateLimitError):
            client.messages.count_tokens(
                model="claude-emulator-test", messages=[{"role": "user", "content": "hi"}]
            )
        assert _list(emu).status_code == 200


def test_rate_limits_are_per_api_key(make_emulator: EmulatorFactory) -> None:
    with make_emulator(requests_per_minute=1, api_keys=["sk-ant-one", "sk-ant-two"]) as emu:
        assert _list(emu, **{"x-api-key": "sk-ant-one"}).status_code == 200
        assert _list(emu, **{"x-api-key": "sk-ant-two"}).status_code == 200
        limited = _list(emu, **{"x-api-key": "sk-ant-one"})
        assert limited.status_code == 429
        assert limited.json()["error"]["message"] == "rate limit exceeded: 1 requests per minute"


@pytest.mark.parametrize(
    ("setting", "status", "error_type"),
    [
        ("overloaded_fraction", 529, "overloaded_error"),
        ("api_error_fraction", 500, "api_error"),
        ("timeout_fraction", 504, "timeout_error"),
    ],
)
def test_error_fraction_answers_status_with_should_retry(
    make_emulator: EmulatorFactory, setting: str, status: int, error_type: str
) -> None:
    with make_emulator(**{setting: 1.0}, retry_after_ms=250) as emu:
        response = _list(emu)
        assert response.status_code == status
        assert response.json()["error"]["type"] == error_type
        assert response.headers["x-should-retry"] == "true"
        assert response.headers["retry-after-ms"] == "250"
        assert response.headers["request-id"] == response.json()["request_id"]


def test_dropped_connection_is_a_protocol_error_for_httpx(make_emulator: EmulatorFactory) -> None:
    with make_emulator(drop_fraction=1.0) as emu:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            _list(emu)
        assert emu.admin.stats()["faults_injected"] == {"drop": 1}


def test_dropped_connection_is_a_connection_error_for_the_sdk(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["drop"])
    with pytest.raises(anthropic.APIConnectionError):
        sdk_client(emulator).messages.batches.list()


def _create(emu: Emulator) -> httpx.Response:
    body = {"requests": [batch_request("a", "hi")]}
    return httpx.post(f"{emu.base_url}/v1/messages/batches", json=body, headers=api_headers(emu))


def test_a_drop_before_acting_makes_no_batch(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["drop"])
    with pytest.raises(httpx.RemoteProtocolError):
        _create(emulator)
    assert _list(emulator).json()["data"] == []


def test_a_drop_after_acting_makes_the_batch_and_loses_the_answer(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["drop_after"])
    with pytest.raises(httpx.RemoteProtocolError):
        _create(emulator)
    (made,) = _list(emulator).json()["data"]
    assert made["request_counts"]["processing"] + made["request_counts"]["succeeded"] == 1
    assert emulator.admin.stats()["faults_injected"] == {"drop_after": 1}


def test_a_500_after_acting_makes_the_batch_and_answers_500(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["500_after"])
    answer = _create(emulator)
    assert answer.status_code == 500
    assert answer.json()["error"]["type"] == "api_error"
    assert len(_list(emulator).json()["data"]) == 1


def test_ok_lets_a_call_through_so_a_later_call_can_be_scripted(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["ok", "529"])
    assert _list(emulator).status_code == 200
    assert _list(emulator).status_code == 529


def test_a_drop_after_fraction_loses_answers_of_performed_calls(make_emulator: EmulatorFactory) -> None:
    with make_emulator(drop_after_fraction=1.0) as emu:
        with pytest.raises(httpx.RemoteProtocolError):
            _create(emu)
        emu.admin.set_config(drop_after_fraction=0.0)
        assert len(_list(emu).json()["data"]) == 1


def test_results_stream_is_cut_after_n_bytes(emulator: Emulator) -> None:
    batch_id = _ended_batch_with_results(emulator)
    emulator.admin.set_config(cut_results_after_bytes=1000)
    url = f"{emulator.base_url}/v1/messages/batches/{batch_id}/results"
    received = bytearray()
    with httpx.stream("GET", url, headers=api_headers(emulator)) as response:
        assert int(response.headers["content-length"]) > 1000
        with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012 - the error comes mid-iteration
            for chunk in response.iter_raw():
                received += chunk
    assert len(received) == 1000


def test_results_stream_is_complete_without_cut(emulator: Emulator) -> None:
    batch_id = _ended_batch_with_results(emulator)
    url = f"{emulator.base_url}/v1/messages/batches/{batch_id}/results"
    response = httpx.get(url, headers=api_headers(emulator))
    assert len(response.content) == int(response.headers["content-length"])
    assert response.headers["content-type"] == "application/x-jsonl"
    assert len(response.text.splitlines()) == 50


def test_scripted_cut_waits_for_a_results_download(emulator: Emulator) -> None:
    batch_id = _ended_batch_with_results(emulator)
    emulator.admin.set_config(next_faults=["cut"], cut_results_after_bytes=10, cut_results_fraction=0.0)
    client = sdk_client(emulator)
    # anthropic 2.17+: a results stream that drops raises APIConnectionError (the transport error inside)
    with pytest.raises(anthropic.APIConnectionError, match="peer closed connection without sending complete"):
        list(client.messages.batches.results(batch_id))  # retrieve passes, the download is cut
    assert len(list(client.messages.batches.results(batch_id))) == 50


def test_slow_answers_are_delayed(make_emulator: EmulatorFactory) -> None:
    with make_emulator(slow_seconds=0.3) as emu:
        started = time.monotonic()
        assert _list(emu).status_code == 200
        assert time.monotonic() - started >= 0.3


def test_same_seed_replays_the_same_fault_sequence(make_emulator: EmulatorFactory) -> None:
    sequences = []
    for _ in range(2):
        with make_emulator(seed=42, overloaded_fraction=0.3, api_error_fraction=0.3) as emu:
            sequences.append([_list(emu).status_code for _ in range(20)])
    assert sequences[0] == sequences[1]
    assert {200, 500, 529} <= set(sequences[0])


def test_reset_restarts_the_fault_sequence(make_emulator: EmulatorFactory) -> None:
    with make_emulator(seed=3, overloaded_fraction=0.5) as emu:
        first = [_list(emu).status_code for _ in range(10)]
        emu.admin.reset()
        assert [_list(emu).status_code for _ in range(10)] == first


def test_faults_never_apply_to_the_admin_endpoint(make_emulator: EmulatorFactory) -> None:
    with make_emulator(drop_fraction=1.0, requests_per_minute=1) as emu:
        for _ in range(3):
            assert emu.admin.stats()["faults_injected"] == {}


def test_faults_can_be_changed_at_run_time(emulator: Emulator) -> None:
    assert _list(emulator).status_code == 200
    emulator.admin.set_config(overloaded_fraction=1.0)
    assert _list(emulator).status_code == 529
    emulator.admin.set_config(overloaded_fraction=0.0)
    assert _list(emulator).status_code == 200
    assert emulator.admin.stats()["faults_injected"] == {"529": 1}


def test_admin_config_rejects_invalid_values(emulator: Emulator) -> None:
    response = httpx.post(f"{emulator.base_url}/_emulator/config", json={"overloaded_fraction": 2})
    assert response.status_code == 400
    assert "overloaded_fraction" in response.json()["error"]["message"]


def test_admin_config_hides_api_keys(emulator: Emulator) -> None:
    assert emulator.api_key not in emulator.admin.config()["api_keys"]


def test_admin_clock_advances_a_running_emulator(make_emulator: EmulatorFactory) -> None:
    with make_emulator(processing_seconds=3600) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        emu.admin.advance_clock(3600)
        assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_stats_count_calls_batches_and_requests(emulator: Emulator, client: anthropic.Anthropic) -> None:
    client.messages.batches.create(requests=[batch_request("a"), batch_request("b")])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_missing")
    stats = emulator.admin.stats()
    assert stats["calls"]["POST /v1/messages/batches"] == {"200": 1}
    assert stats["calls"]["GET /v1/messages/batches/{id}"] == {"404": 1}
    assert stats["batches_created"] == {"sk-ant-...-key": 1}
    assert stats["requests_received"] == 2


def test_create_faults_are_taken_by_creates_only_before_and_after_the_server_acted(
    emulator: Emulator,
) -> None:
    emulator.admin.set_config(create_faults=["drop", "drop_after"])

    assert _list(emulator).status_code == 200  # other calls never take a create's fault
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _create(emulator)  # dropped before the server acts: no batch
    assert _list(emulator).json()["data"] == []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _create(emulator)  # the server made the batch, then dropped the answer
    assert len(_list(emulator).json()["data"]) == 1
    assert _create(emulator).status_code == 200  # the script is used up
    assert emulator.admin.stats()["faults_injected"] == {"drop": 1, "drop_after": 1}


def test_create_fault_fractions_lose_creates_before_and_after_the_server_acted(emulator: Emulator) -> None:
    emulator.admin.set_config(create_drop_fraction=0.3, create_drop_after_fraction=0.3, seed=5)
    for _ in range(40):
        with contextlib.suppress(httpx.RemoteProtocolError, httpx.ReadError):
            _create(emulator)
        assert _list(emulator).status_code == 200

    faults = emulator.admin.stats()["faults_injected"]
    made = sum(emulator.admin.stats()["batches_created"].values())
    assert faults["drop"] > 0
    assert faults["drop_after"] > 0
    assert made == 40 - faults["drop"]
