"""Retry hygiene against the emulator: a clear recorded when the cleared try resumes, every round and
wave checking the input again, canceled work resumed rather than repeated."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchTimeoutError, InputChangedError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    request,
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


# -- every round and wave reads the input again ------------------------------------------------------

TRANSIENT = "[emulator:errored_once=overloaded_error]"


def write_input(path: Path, edited: str | None = None) -> None:
    """Four requests; ``b`` fails transiently once (re-driven). ``edited`` names a line to change."""
    lines = [request(name, f"question {name}" + (f" {TRANSIENT}" if name == "b" else "")) for name in "abcd"]
    for line in lines:
        if line["custom_id"] == edited:
            line["params"]["messages"][0]["content"] += " (edited)"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def edit_once_created(emulator: Emulator, path: Path, edited: str, batches: int = 1) -> threading.Thread:
    """A person editing the input while the job's first batches run."""

    def edit() -> None:
        deadline = time.monotonic() + 30
        while batches_created(emulator) < batches and time.monotonic() < deadline:
            time.sleep(0.02)
        write_input(path, edited)

    thread = threading.Thread(target=edit)
    thread.start()
    return thread


@pytest.mark.parametrize("edited", ["b", "a"], ids=["a-re-driven-line", "a-finished-line"])
def test_a_line_edited_while_round_1_runs_fails_round_2_before_any_create(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edited: str
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path)
    with running_emulator(monkeypatch, processing_seconds=1) as emulator:
        editor = edit_once_created(emulator, path, edited)
        operator = create(requests=None, requests_path=str(path), redrive=Redrive())

        with pytest.raises(InputChangedError, match="round 2 was not sent"):
            operator.execute(task_context())
        editor.join()

        assert batches_created(emulator) == 1


def test_a_line_edited_while_a_deferred_round_1_runs_fails_round_2_on_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path)
    with running_emulator(monkeypatch) as emulator:
        context = task_context()
        settings: dict[str, Any] = {"requests": None, "requests_path": str(path), "redrive": Redrive()}
        with pytest.raises(TaskDeferred) as deferred:
            create(deferrable=True, **settings).execute(context)
        (event,) = asyncio.run(_events(deferred.value.trigger))
        write_input(path, edited="b")

        with pytest.raises(InputChangedError, match="round 2 was not sent"):
            create(deferrable=True, **settings).execute_complete(
                context, event=event, **deferred.value.kwargs
            )

        assert batches_created(emulator) == 1


def test_restoring_the_input_lets_the_retry_go_on_without_sending_anything_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path)
    with running_emulator(monkeypatch, processing_seconds=1) as emulator:
        store = FakeTaskStateStore()
        editor = edit_once_created(emulator, path, "b")
        settings: dict[str, Any] = {"requests": None, "requests_path": str(path), "redrive": Redrive()}
        with pytest.raises(InputChangedError):
            create(**settings).execute(task_context(store))
        editor.join()
        write_input(path)

        manifest = create(**settings).execute(task_context(store))

        assert [entry["request_count"] for entry in manifest["rounds"]] == [4, 1]
        assert manifest["request_counts"]["succeeded"] == 4
        assert batches_created(emulator) == 2


def test_a_line_of_a_sent_wave_edited_while_it_runs_stops_the_next_wave(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path)
    with running_emulator(monkeypatch, processing_seconds=1) as emulator:
        editor = edit_once_created(emulator, path, "a")  # in the first wave, already sent
        operator = create(requests=None, requests_path=str(path), max_requests_in_flight=2)

        with pytest.raises(InputChangedError, match="1 slice\\(s\\) of round 1 were not sent"):
            operator.execute(task_context())
        editor.join()

        assert batches_created(emulator) == 1
