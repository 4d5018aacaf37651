"""AnthropicBatchSensor in process: poke, the deferred event, outcomes, and never canceling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchOutcomeError, BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
    request,
    requests,
    running_emulator,
    task_context,
)


def sensor(batch_id: Any, **kwargs: Any) -> AnthropicBatchSensor:
    settings: dict[str, Any] = {"poke_interval": 0.05, "timeout": 30, "deferrable": False, **kwargs}
    return AnthropicBatchSensor(task_id="wait", batch_id=batch_id, **settings)


def test_poke_is_false_while_a_batch_is_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))

        assert sensor(batch.id).poke(task_context()) is False


def test_poke_returns_the_final_counts_once_every_batch_ended(emulator: Emulator) -> None:
    first, second = AnthropicHook().create_batch(requests(1)), AnthropicHook().create_batch(requests(2))

    result = sensor({"batch_ids": [first.id, second.id]}).poke(task_context())

    assert isinstance(result, PokeReturnValue)
    assert result.xcom_value["request_counts"]["succeeded"] == 3


def test_execute_in_poke_mode_waits_and_returns_the_counts(emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(2))

    assert sensor(batch.id).execute(task_context())["request_counts"]["succeeded"] == 2


def test_errored_requests_fail_with_fail_on_partial_error(emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch([request("bad", "[emulator:errored]")])

    with pytest.raises(BatchOutcomeError, match="No request succeeded: 0 succeeded, 1 errored"):
        sensor(batch.id, fail_on_partial_error=True).poke(task_context())


def test_every_request_canceled_skips(emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch([request("c", "[emulator:canceled]")])

    with pytest.raises(AirflowSkipException):
        sensor(batch.id).poke(task_context())


def test_deferrable_defers_to_a_trigger_that_does_not_own_the_batch(emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(1))
    waiting = sensor(batch.id, deferrable=True)
    context = task_context()

    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute(context)

    trigger = deferred.value.trigger
    assert isinstance(trigger, AnthropicBatchTrigger)
    assert not trigger.cancel_on_kill
    assert context["ti"].xcoms["batch_ids"] == [batch.id]
    event = asyncio.run(_first_event(trigger))
    assert waiting.execute_complete(context, event=event)["request_counts"]["succeeded"] == 1


async def _first_event(trigger: AnthropicBatchTrigger) -> dict[str, Any]:
    (event,) = [event.payload async for event in trigger.run()]
    return event


def test_a_timeout_event_fails_without_canceling(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))
        event = {"status": "timeout", "batch_ids": [batch.id], "request_counts": {}, "message": "too slow"}

        with pytest.raises(AirflowSensorTimeout, match="too slow"):
            sensor(batch.id, deferrable=True).execute_complete(task_context(), event=event)

        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is None


def test_an_error_event_fails_loudly() -> None:
    event = {"status": "error", "batch_ids": ["msgbatch_1"], "request_counts": {}, "message": "401"}

    with pytest.raises(BatchWaitError, match="401"):
        sensor("msgbatch_1").execute_complete(task_context(), event=event)
