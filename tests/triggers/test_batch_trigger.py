"""AnthropicBatchTrigger: one validated event per job, async polling, backoff, deadline, error policy."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.triggers import batches as trigger_module
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger, parse_wait_event
from tests.fakes import API_KEY, BASE_URL, Recorder, batch_json, error
from tests.operators.support import request, requests, running_emulator

FAR = 10**10  # a deadline that never comes


async def first_event(trigger: AnthropicBatchTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events
    return events[0]


# -- against the emulator --------------------------------------------------------------------------


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with running_emulator(monkeypatch) as emu:
        yield emu


async def test_reports_success_with_final_counts_of_every_batch(emulator: Emulator) -> None:
    hook = AnthropicHook()
    first = hook.create_batch(requests(2))
    second = hook.create_batch([request("bad", "[emulator:errored]")])
    trigger = AnthropicBatchTrigger(batch_ids=[first.id, second.id], deadline=FAR, poll_interval=0.01)

    event = await first_event(trigger)

    assert event["status"] == "success"
    assert event["request_counts"][first.id]["succeeded"] == 2
    assert event["request_counts"][second.id]["errored"] == 1
    assert parse_wait_event(event, expected_batch_ids=[first.id, second.id]).status == "success"


async def test_on_kill_cancels_the_batches_it_owns(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600, canceling_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))
        await AnthropicBatchTrigger(batch_ids=[batch.id], deadline=FAR, cancel_on_kill=True).on_kill()
        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is not None


async def test_on_kill_leaves_batches_it_does_not_own_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))
        await AnthropicBatchTrigger(batch_ids=[batch.id], deadline=FAR, cancel_on_kill=False).on_kill()
        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is None


# -- exact cases with scripted answers ---------------------------------------------------------------


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the trigger's waits instead of sleeping; the hook makes no retries of its own."""
    conn = {
        "conn_type": "anthropic_batches",
        "host": BASE_URL,
        "password": API_KEY,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(conn))
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(round(seconds, 3))

    monkeypatch.setattr(trigger_module.asyncio, "sleep", fake_sleep)
    return waited


def scripted(monkeypatch: pytest.MonkeyPatch, *answers: Any) -> Recorder:
    recorder = Recorder(*answers)
    hook_with_transport = partial(AnthropicHook, async_transport=recorder.transport())
    monkeypatch.setattr(trigger_module, "AnthropicHook", hook_with_transport)
    return recorder


def in_progress() -> httpx.Response:
    return httpx.Response(200, json=batch_json())


def ended() -> httpx.Response:
    return httpx.Response(200, json=batch_json(status="ended"))


async def test_poll_interval_backs_off_toward_the_cap(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    scripted(monkeypatch, in_progress(), in_progress(), in_progress(), in_progress(), ended())
    trigger = AnthropicBatchTrigger(
        batch_ids=["msgbatch_1"], deadline=FAR, poll_interval=2, max_poll_interval=4
    )

    assert (await first_event(trigger))["status"] == "success"
    assert sleeps == pytest.approx([2, 3, 4, 4], abs=0.1)  # less the time each round took


async def test_deadline_passed_sends_a_timeout_event(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    scripted(monkeypatch, in_progress())
    trigger = AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=time.time() - 1)

    event = await first_event(trigger)

    assert event["status"] == "timeout"
    assert "msgbatch_1" in event["message"]


async def test_never_sleeps_past_the_deadline(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    scripted(monkeypatch, in_progress(), ended())
    trigger = AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=time.time() + 5, poll_interval=60)

    await first_event(trigger)

    assert 0 < sleeps[0] <= 5


async def test_authentication_error_ends_the_wait_at_once(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    recorder = scripted(monkeypatch, error(401, "authentication_error", "invalid x-api-key"))
    event = await first_event(AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=FAR))

    assert event["status"] == "error"
    assert "authentication_error" in event["message"]
    assert len(recorder.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [500, 529, 429])
async def test_transient_errors_are_tolerated(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float], status: int
) -> None:
    scripted(monkeypatch, error(status, "api_error"), error(status, "api_error"), ended())
    event = await first_event(AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=FAR, poll_interval=1))

    assert event["status"] == "success"
    assert len(sleeps) == 2


async def test_not_found_right_after_create_is_tolerated(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    scripted(monkeypatch, error(404, "not_found_error"), ended())
    trigger = AnthropicBatchTrigger(
        batch_ids=["msgbatch_1"], deadline=FAR, not_found_grace_until=time.time() + 60
    )

    assert (await first_event(trigger))["status"] == "success"


async def test_not_found_after_the_grace_window_ends_the_wait(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    scripted(monkeypatch, error(404, "not_found_error"))
    trigger = AnthropicBatchTrigger(
        batch_ids=["msgbatch_1"], deadline=FAR, not_found_grace_until=time.time() - 1
    )

    event = await first_event(trigger)

    assert event["status"] == "error"
    assert "not_found_error" in event["message"]


async def test_a_crash_while_polling_still_yields_one_error_event(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT")
    event = await first_event(AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=FAR))

    assert event["status"] == "error"


# -- serialization ---------------------------------------------------------------------------------


def test_a_rebuilt_trigger_serializes_the_same() -> None:
    trigger = AnthropicBatchTrigger(
        batch_ids=["msgbatch_1", "msgbatch_2"],
        conn_id="my_conn",
        deadline=1_900_000_000.5,
        poll_interval=5,
        max_poll_interval=50,
        not_found_grace_until=1_800_000_000.0,
        cancel_on_kill=True,
    )
    classpath, kwargs = trigger.serialize()

    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))

    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["deadline"] == 1_900_000_000.5


def test_serialized_kwargs_hold_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps({"conn_type": "anthropic_batches", "password": API_KEY})
    )
    _, kwargs = AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=FAR).serialize()

    assert API_KEY not in json.dumps(kwargs)
    assert kwargs["conn_id"] == "anthropic_default"


# -- the event a task resumes with -----------------------------------------------------------------


def success_event(**changes: Any) -> dict[str, Any]:
    counts = {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0}
    event = {"status": "success", "batch_ids": ["msgbatch_1"], "request_counts": {"msgbatch_1": counts}}
    return {**event, "message": "1 batch(es) ended", **changes}


@pytest.mark.parametrize(
    "event",
    [
        None,
        "success",
        success_event(status="done"),
        success_event(message=None),
        success_event(batch_ids=[]),
        success_event(batch_ids=["msgbatch_other"], request_counts={}),
        success_event(request_counts={}),
        success_event(request_counts={"msgbatch_1": {"succeeded": "1"}}),
    ],
    ids=["none", "string", "unknown-status", "no-message", "no-ids", "other-ids", "no-counts", "bad-counts"],
)
def test_an_unexpected_event_fails_loudly(event: Any) -> None:
    with pytest.raises(BatchWaitError, match="unexpected trigger event"):
        parse_wait_event(event, expected_batch_ids=["msgbatch_1"])


def test_a_well_formed_event_is_accepted() -> None:
    parsed = parse_wait_event(success_event(), expected_batch_ids=["msgbatch_1"])

    assert parsed.request_counts["msgbatch_1"]["succeeded"] == 1
