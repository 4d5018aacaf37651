"""AnthropicBatchTrigger: one validated event per job, async polling, backoff, deadline, error policy."""

from __future__ import annotations

import importlib
import json
import time
from functools import partial
from typing import Any

import httpx
import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.policy import WaitSpec, parse_wait_event
from airflow_provider_batches.triggers import batches as trigger_module
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.fakes import API_KEY, BASE_URL, Recorder, batch_json, error
from tests.operators.support import request, requests, running_emulator

FAR = 10**10  # a deadline that never comes


async def first_event(trigger: AnthropicBatchTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events
    return events[0]


# -- against the emulator --------------------------------------------------------------------------


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


# -- scripted answers (the wait's policy itself: tests/test_waiting.py, stepping the plan) -----------


@pytest.fixture
def scripted_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default connection, its calls making no retries of their own."""
    conn = {
        "conn_type": "anthropic_batches",
        "host": BASE_URL,
        "password": API_KEY,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(conn))


def scripted(monkeypatch: pytest.MonkeyPatch, *answers: Any) -> Recorder:
    recorder = Recorder(*answers)
    hook_with_transport = partial(AnthropicHook, async_transport=recorder.transport())
    monkeypatch.setattr(trigger_module, "AnthropicHook", hook_with_transport)
    return recorder


@pytest.mark.usefixtures("scripted_connection")
async def test_a_passed_deadline_sends_a_timeout_event(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted(monkeypatch, httpx.Response(200, json=batch_json()))
    trigger = AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=time.time() - 1)

    event = await first_event(trigger)

    assert event["status"] == "timeout"
    assert "msgbatch_1" in event["message"]


@pytest.mark.usefixtures("scripted_connection")
async def test_an_authentication_error_sends_an_error_event_after_one_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = scripted(monkeypatch, error(401, "authentication_error", "invalid x-api-key"))
    event = await first_event(AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=FAR))

    assert event["status"] == "error"
    assert "authentication_error" in event["message"]
    assert len(recorder.requests) == 1


@pytest.mark.usefixtures("scripted_connection")
async def test_a_crash_while_polling_still_yields_one_error_event_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT")
    event = await first_event(AnthropicBatchTrigger(batch_ids=["msgbatch_1"], deadline=FAR))

    assert event["status"] == "error"
    assert event["message"].startswith("polling stopped: ")
    assert "anthropic_default" in event["message"]


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


#: What version 0.3 serialized for a trigger (flat keyword arguments): a deferred task of that version
#: resumes in a triggerer of this one.
PREVIOUS_VERSION_KWARGS: dict[str, Any] = {
    "batch_ids": ["msgbatch_1", "msgbatch_2"],
    "conn_id": "my_conn",
    "deadline": 1_900_000_000.5,
    "poll_interval": 5.0,
    "max_poll_interval": 50.0,
    "not_found_grace_until": 1_800_000_000.0,
    "cancel_on_kill": True,
    "progress_interval": 120.0,
    "label": "round 2",
    "wait_started": 1_700_000_000.0,
}
#: The same wait, as a WaitSpec (the trigger-only fields left out).
PREVIOUS_VERSION_SPEC = WaitSpec(
    deadline=1_900_000_000.5,
    poll_interval=5.0,
    max_poll_interval=50.0,
    not_found_grace_until=1_800_000_000.0,
    progress_interval=120.0,
    label="round 2",
)


def test_a_trigger_serialized_by_the_previous_version_is_rebuilt_as_it_was() -> None:
    rebuilt = AnthropicBatchTrigger(**json.loads(json.dumps(PREVIOUS_VERSION_KWARGS)))

    assert rebuilt.serialize()[1] == PREVIOUS_VERSION_KWARGS
    assert rebuilt.spec == PREVIOUS_VERSION_SPEC


def test_a_trigger_built_from_a_wait_spec_waits_as_the_spec_says() -> None:
    spec = PREVIOUS_VERSION_SPEC
    trigger = AnthropicBatchTrigger.for_wait(["msgbatch_1"], spec, conn_id="my_conn", cancel_on_kill=True)

    assert trigger.spec == spec
    assert set(trigger.serialize()[1]) == set(PREVIOUS_VERSION_KWARGS)  # the serialized shape is unchanged
    assert trigger.cancel_on_kill is True


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
