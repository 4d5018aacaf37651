"""Batch lifecycle: processing clock, counts, cancel, expiry, archive, delete, isolation, outcome markers."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from airflow_provider_batches.emulator import Emulator, ManualClock
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import api_headers, batch_request, sdk_client

DAY = 86_400.0


def _results(client: anthropic.Anthropic, batch_id: str) -> dict[str, str]:
    return {line.custom_id: line.result.type for line in client.messages.batches.results(batch_id)}


def test_batch_stays_in_progress_until_processing_time_passes(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, processing_seconds=10) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        clock.advance(9.9)
        assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
        clock.advance(0.1)
        assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_counts_flip_at_once_and_always_sum_to_request_count(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, processing_seconds=10) as emu:
        client = sdk_client(emu)
        requests = [batch_request("ok-1"), batch_request("ok-2"), batch_request("bad", "[emulator:errored]")]
        batch = client.messages.batches.create(requests=requests)
        clock.advance(5)
        halfway = client.messages.batches.retrieve(batch.id).request_counts
        assert halfway.model_dump() == {
            "processing": 3,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        clock.advance(5)
        ended = client.messages.batches.retrieve(batch.id)
        counts = ended.request_counts.model_dump()
        assert counts == {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}
        assert ended.ended_at is not None
        assert ended.results_url is not None


def test_ended_at_and_results_url_are_null_while_in_progress(make_emulator: EmulatorFactory) -> None:
    with make_emulator(processing_seconds=10) as emu:
        batch = sdk_client(emu).messages.batches.create(requests=[batch_request("a")])
        assert batch.ended_at is None
        assert batch.results_url is None
        assert batch.archived_at is None


def test_timestamps_are_rfc3339_with_z(emulator: Emulator) -> None:
    body = {"requests": [batch_request("a")]}
    batch = httpx.post(
        f"{emulator.base_url}/v1/messages/batches", json=body, headers=api_headers(emulator)
    ).json()
    assert batch["created_at"].endswith("Z")
    assert batch["expires_at"].endswith("Z")


def test_expires_at_is_created_at_plus_expiry(make_emulator: EmulatorFactory) -> None:
    with make_emulator(expiry_seconds=100) as emu:
        batch = sdk_client(emu).messages.batches.create(requests=[batch_request("a")])
        assert (batch.expires_at - batch.created_at).total_seconds() == 100


def test_cancel_cancels_only_unfinished_requests(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, processing_seconds=10, canceling_seconds=1) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request(f"r{i}") for i in range(4)])
        clock.advance(5)  # requests finish evenly over 10 s: r0 and r1 are done
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
        assert client.messages.batches.retrieve(batch.id).processing_status == "canceling"
        clock.advance(1)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)
        assert _results(client, batch.id) == {
            "r0": "succeeded",
            "r1": "succeeded",
            "r2": "canceled",
            "r3": "canceled",
        }


def test_cancel_right_after_create_with_instant_clock_cancels_everything(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[batch_request("a"), batch_request("b")])
    client.messages.batches.cancel(batch.id)
    assert client.messages.batches.retrieve(batch.id).request_counts.canceled == 2


def test_cancel_after_end_is_invalid_request(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[batch_request("a")])
    client.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.BadRequestError, match="has already ended and cannot be canceled"):
        client.messages.batches.cancel(batch.id)


def test_cancel_twice_is_harmless(make_emulator: EmulatorFactory) -> None:
    with make_emulator(processing_seconds=10, canceling_seconds=5) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        first = client.messages.batches.cancel(batch.id)
        second = client.messages.batches.cancel(batch.id)
        assert first.cancel_initiated_at == second.cancel_initiated_at


def test_unfinished_requests_expire_at_expires_at(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, processing_seconds=40, expiry_seconds=10) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request(f"r{i}") for i in range(4)])
        clock.advance(10)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert ended.ended_at == ended.expires_at
        assert (ended.request_counts.succeeded, ended.request_counts.expired) == (1, 3)


def test_archive_sets_archived_at_and_results_become_not_found(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, archive_seconds=29 * DAY) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        assert _results(client, batch.id) == {"a": "succeeded"}
        clock.advance(29 * DAY)
        archived = client.messages.batches.retrieve(batch.id)
        assert archived.archived_at is not None
        with pytest.raises(anthropic.NotFoundError):
            list(client.messages.batches.results(batch.id))


def test_results_before_end_is_invalid_request(make_emulator: EmulatorFactory) -> None:
    with make_emulator(processing_seconds=10) as emu:
        batch = sdk_client(emu).messages.batches.create(requests=[batch_request("a")])
        url = f"{emu.base_url}/v1/messages/batches/{batch.id}/results"
        response = httpx.get(url, headers=api_headers(emu))
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["error"]["message"] == (
            f"Batch '{batch.id}' has not ended yet; results are not ready."
        )


def test_delete_while_in_progress_is_invalid_request(make_emulator: EmulatorFactory) -> None:
    with make_emulator(processing_seconds=10) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        with pytest.raises(anthropic.BadRequestError, match="only ended batches can be deleted"):
            client.messages.batches.delete(batch.id)


def test_deleted_batch_leaves_the_list(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[batch_request("a")])
    client.messages.batches.retrieve(batch.id)
    client.messages.batches.delete(batch.id)
    assert list(client.messages.batches.list()) == []


def test_batches_are_isolated_per_api_key(make_emulator: EmulatorFactory) -> None:
    with make_emulator(api_keys=["sk-ant-one", "sk-ant-two"]) as emu:
        one, two = sdk_client(emu, "sk-ant-one"), sdk_client(emu, "sk-ant-two")
        batch = one.messages.batches.create(requests=[batch_request("a")])
        assert list(two.messages.batches.list()) == []
        for call in (two.messages.batches.retrieve, two.messages.batches.cancel, two.messages.batches.delete):
            with pytest.raises(anthropic.NotFoundError):
                call(batch.id)
        assert [b.id for b in one.messages.batches.list()] == [batch.id]


def test_results_url_uses_the_host_the_client_used(emulator: Emulator, client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[batch_request("a")])
    url = client.messages.batches.retrieve(batch.id).results_url
    assert url == f"{emulator.base_url}/v1/messages/batches/{batch.id}/results"


def test_results_url_uses_configured_public_base_url(make_emulator: EmulatorFactory) -> None:
    with make_emulator(public_base_url="https://gateway.example/anthropic") as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        url = client.messages.batches.retrieve(batch.id).results_url
        assert url == f"https://gateway.example/anthropic/v1/messages/batches/{batch.id}/results"


def test_outcome_markers_choose_each_result_type(client: anthropic.Anthropic) -> None:
    requests = [
        batch_request("ok", "fine [emulator:succeeded]"),
        batch_request("err", "boom [emulator:errored=overloaded_error]"),
        batch_request("can", "[emulator:canceled]"),
        batch_request("exp", "[emulator:expired]"),
    ]
    batch = client.messages.batches.create(requests=requests)
    client.messages.batches.retrieve(batch.id)
    lines = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
    assert {cid: result.type for cid, result in lines.items()} == {
        "ok": "succeeded",
        "err": "errored",
        "can": "canceled",
        "exp": "expired",
    }
    errored = lines["err"]
    assert errored.type == "errored"
    assert errored.error.error.type == "overloaded_error"
    assert errored.error.request_id is not None


def test_unknown_model_in_batch_ends_errored_not_found(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[batch_request("a", model="gpt-4")])
    client.messages.batches.retrieve(batch.id)
    (line,) = list(client.messages.batches.results(batch.id))
    assert line.result.type == "errored"
    assert line.result.error.error.type == "not_found_error"


def test_errored_fraction_is_seeded_and_deterministic(make_emulator: EmulatorFactory) -> None:
    outcomes = []
    for _ in range(2):
        with make_emulator(errored_fraction=0.5, seed=7) as emu:
            client = sdk_client(emu)
            batch = client.messages.batches.create(requests=[batch_request(f"r{i}") for i in range(40)])
            client.messages.batches.retrieve(batch.id)
            outcomes.append(_results(client, batch.id))
    assert outcomes[0] == outcomes[1]
    assert 5 < list(outcomes[0].values()).count("errored") < 35


def test_results_do_not_come_in_submission_order(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[batch_request(f"r{i}") for i in range(4)])
    client.messages.batches.retrieve(batch.id)
    order = [line.custom_id for line in client.messages.batches.results(batch.id)]
    assert sorted(order) == ["r0", "r1", "r2", "r3"]
    assert order != ["r0", "r1", "r2", "r3"]


def test_clock_jump_with_settle_ends_every_due_batch_before_any_read(make_emulator: EmulatorFactory) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, processing_seconds=10) as emu:
        client = sdk_client(emu)
        for _ in range(3):
            client.messages.batches.create(requests=[batch_request("a")])
        jump = {"advance_seconds": 10, "settle": True}
        assert httpx.post(f"{emu.base_url}/_emulator/clock", json=jump).json()["ended"] == 3
        assert httpx.post(f"{emu.base_url}/_emulator/clock", json=jump).json()["ended"] == 0
