"""cancel_on_timeout / cancel_on_kill, against the emulator: a batch left running is re-attached later."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_batches.errors import BatchTimeoutError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from tests.operators.support import (
    AirflowSensorTimeout,
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    requests,
    running_emulator,
    task_context,
)


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"requests": requests(2), "poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", **settings)


def status_of(batch_id: str) -> str:
    return AnthropicHook().get_batch(batch_id).processing_status


def test_a_timeout_without_cancel_on_timeout_leaves_the_batch_in_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        context = task_context()
        with pytest.raises(BatchTimeoutError):
            create(timeout=0.2, cancel_on_timeout=False).execute(context)

        (batch_id,) = context["ti"].xcoms["batch_ids"]
        assert status_of(batch_id) == "in_progress"
        assert AnthropicHook().get_batch(batch_id).cancel_initiated_at is None


def test_a_retry_after_an_uncanceled_timeout_reattaches_to_the_running_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        first = task_context(store)
        with pytest.raises(BatchTimeoutError):
            create(timeout=0.2, cancel_on_timeout=False).execute(first)
        emulator.admin.advance_clock(601)

        manifest = create(cancel_on_timeout=False).execute(task_context(store))

        assert manifest["batch_ids"] == first["ti"].xcoms["batch_ids"]
        assert manifest["request_counts"]["succeeded"] == 2
        assert batches_created(emulator) == 1


def test_a_timeout_event_without_cancel_on_timeout_leaves_the_batch_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        context = task_context()
        with pytest.raises(TaskDeferred):
            create(deferrable=True, cancel_on_timeout=False).execute(context)
        (batch_id,) = context["ti"].xcoms["batch_ids"]
        event = {"status": "timeout", "batch_ids": [batch_id], "request_counts": {}, "message": "too slow"}

        with pytest.raises(BatchTimeoutError):
            create(deferrable=True, cancel_on_timeout=False).execute_complete(context, event=event)

        assert status_of(batch_id) == "in_progress"


def test_on_kill_without_cancel_on_kill_leaves_the_batch_running(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        operator = create(wait_for_completion=False, cancel_on_kill=False)
        (batch_id,) = operator.execute(task_context())["batch_ids"]

        operator.on_kill()

        assert AnthropicHook().get_batch(batch_id).cancel_initiated_at is None


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_the_deferred_trigger_cancels_on_kill_as_told(
    monkeypatch: pytest.MonkeyPatch, cancel_on_kill: bool
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        with pytest.raises(TaskDeferred) as deferred:
            create(deferrable=True, cancel_on_kill=cancel_on_kill).execute(task_context())

        assert deferred.value.trigger.cancel_on_kill is cancel_on_kill


def test_the_sensor_cancels_on_a_poke_timeout_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))
        sensor = AnthropicBatchSensor(
            task_id="wait", batch_id=batch.id, poke_interval=0.05, timeout=0.2, cancel_on_timeout=True
        )

        with pytest.raises(AirflowSensorTimeout):
            sensor.execute(task_context())

        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is not None


def test_the_sensor_cancels_on_a_timeout_event_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))
        event = {"status": "timeout", "batch_ids": [batch.id], "request_counts": {}, "message": "too slow"}
        sensor = AnthropicBatchSensor(task_id="wait", batch_id=batch.id, cancel_on_timeout=True)

        with pytest.raises(AirflowSensorTimeout):
            sensor.execute_complete(task_context(), event=event)

        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is not None


def test_the_sensor_cancels_on_kill_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))

        AnthropicBatchSensor(task_id="wait", batch_id=batch.id, cancel_on_kill=True).on_kill()

        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is not None
