"""Retry hygiene against the emulator: a clear recorded when the cleared try resumes, every round and
wave checking the input again, canceled work resumed rather than repeated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_batches.errors import BatchTimeoutError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    requests,
    running_emulator,
    task_context,
)


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"requests": requests(4), "poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", **settings)


def run_deferred(operator: AnthropicCreateBatchOperator, context: dict[str, Any]) -> dict[str, Any]:
    """One try of a deferrable task: execute, then the trigger, then ``execute_complete``, as often as
    the task defers."""
    method, kwargs = operator.execute, {}
    while True:
        try:
            return method(context, **kwargs)
        except TaskDeferred as deferred:
            trigger = deferred.trigger
            assert isinstance(trigger, AnthropicBatchTrigger)
            (event,) = asyncio.run(_events(trigger))
            method = getattr(operator, deferred.method_name)
            kwargs = {"event": event, **(deferred.kwargs or {})}


async def _events(trigger: AnthropicBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


# -- clear, then retry ------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_retry_of_a_cleared_try_that_finished_the_job_returns_its_manifest_without_a_call(
    monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        with pytest.raises(BatchTimeoutError):  # try 1 times out, its batch left running
            create(timeout=0.2, cancel_on_timeout=False).execute(task_context(store, max_tries=1))
        emulator.admin.advance_clock(601)
        cleared = task_context(store, max_tries=2)  # a person clears the task: max_tries goes up
        operator = create(cancel_on_timeout=False, deferrable=deferrable)
        finished = run_deferred(operator, cleared) if deferrable else operator.execute(cleared)
        calls_before = emulator.admin.stats()["calls"]

        # the cleared try's worker is lost after the job finished: Airflow retries it (same max_tries)
        again = create(cancel_on_timeout=False, deferrable=deferrable).execute(
            task_context(store, max_tries=2)
        )

        assert again == finished
        assert batches_created(emulator) == 1
        assert emulator.admin.stats()["calls"] == calls_before
