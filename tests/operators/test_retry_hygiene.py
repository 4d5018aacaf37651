"""Retry hygiene against the emulator: a clear recorded when the cleared try resumes, every round and
wave checking the input again, canceled work resumed rather than repeated."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import TaskDeferralTimeout
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferralTimeout  # type: ignore[no-redef,attr-defined,unused-ignore]

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchCanceledError, BatchTimeoutError, InputChangedError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators import batches as batches_module
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.proof import is_proof_id
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
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

#: Emulated seconds per batch: advancing the clock by ``PROCESSING * f`` finishes a fraction f of a
#: batch's requests (the clock also runs in real time: 1 s is 0.1 %).
PROCESSING = 1000.0

TRANSIENT = "[emulator:errored_once=overloaded_error]"


def write_input(path: Path, edited: str | None = None) -> None:
    """Four requests; ``b`` fails transiently once (re-driven). ``edited`` names a line to change."""
    lines = [request(name, f"question {name}" + (f" {TRANSIENT}" if name == "b" else "")) for name in "abcd"]
    for line in lines:
        if line["custom_id"] == edited:
            line["params"]["messages"][0]["content"] += " (edited)"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def edit_once_created(emulator: Emulator, path: Path, edited: str, batches: int = 1) -> threading.Thread:
    """A person editing the input while the job's first batches run; they end only after the edit."""

    def edit() -> None:
        deadline = time.monotonic() + 30
        while batches_created(emulator) < batches and time.monotonic() < deadline:
            time.sleep(0.02)
        write_input(path, edited)
        emulator.admin.advance_clock(PROCESSING + 1)

    thread = threading.Thread(target=edit)
    thread.start()
    return thread


@pytest.mark.parametrize("edited", ["b", "a"], ids=["a-re-driven-line", "a-finished-line"])
def test_a_line_edited_while_round_1_runs_fails_round_2_before_any_create(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edited: str
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path)
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
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
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        editor = edit_once_created(emulator, path, "b")
        settings: dict[str, Any] = {"requests": None, "requests_path": str(path), "redrive": Redrive()}
        with pytest.raises(InputChangedError):
            create(**settings).execute(task_context(store))
        editor.join()
        write_input(path)
        clock = advance_when_created(emulator, 2, PROCESSING + 1)

        manifest = create(**settings).execute(task_context(store))
        clock.join()

        assert [entry["request_count"] for entry in manifest["rounds"]] == [4, 1]
        assert manifest["request_counts"]["succeeded"] == 4
        assert batches_created(emulator) == 2


def test_a_line_of_a_sent_wave_edited_while_it_runs_stops_the_next_wave(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path)
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        editor = edit_once_created(emulator, path, "a")  # in the first wave, already sent
        operator = create(requests=None, requests_path=str(path), max_requests_in_flight=3)

        with pytest.raises(InputChangedError, match="1 slice\\(s\\) were not sent \\(round 1\\)"):
            operator.execute(task_context())
        editor.join()

        assert batches_created(emulator) == 1


# -- canceled work resumes, it is not repeated --------------------------------------------------------


def billed_successes(emulator: Emulator) -> Counter[str]:
    """Per custom_id, how many succeeded results were billed, over every batch on the key."""
    hook = AnthropicHook()
    billed: Counter[str] = Counter()
    for batch in hook.iter_batches():
        billed.update(
            line.custom_id for line in hook.iter_results(batch.id) if line.result.type == "succeeded"
        )
    return billed


def run_deferred_advancing(
    emulator: Emulator, operator: AnthropicCreateBatchOperator, context: dict[str, Any]
) -> dict[str, Any]:
    """A deferrable try whose batches each finish while it is deferred (the clock runs on)."""
    method, kwargs = operator.execute, {}
    while True:
        try:
            return method(context, **kwargs)
        except TaskDeferred as deferred:
            emulator.admin.advance_clock(PROCESSING + 1)
            (event,) = asyncio.run(_events(deferred.trigger))
            method = getattr(operator, deferred.method_name)
            kwargs = {"event": event, **(deferred.kwargs or {})}


def test_a_timeout_then_a_retry_bills_no_finished_request_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        context = task_context(store)
        settings: dict[str, Any] = {"requests": requests(40), "deferrable": True}
        with pytest.raises(TaskDeferred) as deferred:
            create(**settings, timeout=0.3).execute(context)
        emulator.admin.advance_clock(PROCESSING * 0.45)  # 18 of 40 done when the task times out and cancels
        (event,) = asyncio.run(_events(deferred.value.trigger))
        with pytest.raises(BatchTimeoutError):
            create(**settings, timeout=0.3).execute_complete(context, event=event, **deferred.value.kwargs)

        manifest = run_deferred_advancing(
            emulator, create(**settings), task_context(store)
        )  # Airflow's retry

        assert [entry["request_count"] for entry in manifest["rounds"]] == [40, 22]
        assert [entry["kind"] for entry in manifest["rounds"]] == ["first", "resume"]
        assert manifest["request_counts"]["succeeded"] == 40
        billed = billed_successes(emulator)
        proofs = [custom_id for custom_id in billed if is_proof_id(custom_id)]
        assert sorted(set(billed) - set(proofs)) == sorted(line["custom_id"] for line in requests(40))
        assert set(billed.values()) == {1}
        assert batches_created(emulator) == 2
        exported = AnthropicBatchResultsToObjectStorageOperator(
            task_id="results", batch_id=manifest, destination=f"file://{tmp_path}/out/"
        ).execute(cast(Context, {}))
        assert exported["counts"] == {"succeeded": 40, "errored": 0, "canceled": 0, "expired": 0}


def advance_when_created(emulator: Emulator, batches: int, seconds: float) -> threading.Thread:
    """Let the emulated clock run ``seconds`` once the key holds ``batches`` batches."""

    def advance() -> None:
        deadline = time.monotonic() + 30
        while batches_created(emulator) < batches and time.monotonic() < deadline:
            time.sleep(0.02)
        emulator.admin.advance_clock(seconds)

    thread = threading.Thread(target=advance)
    thread.start()
    return thread


def test_a_timeout_then_a_retry_in_the_worker_resumes_only_the_unfinished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        clock = advance_when_created(emulator, 1, PROCESSING * 0.45)
        with pytest.raises(BatchTimeoutError):
            create(requests=requests(40), timeout=3.0).execute(task_context(store))
        clock.join()
        clock = advance_when_created(emulator, 2, PROCESSING + 1)

        manifest = create(requests=requests(40), timeout=30).execute(task_context(store))
        clock.join()

        first, resumed = manifest["rounds"]  # about 18 done at the cancel (the clock also runs in real time)
        assert 0 < first["request_counts"]["succeeded"] < 40
        assert (
            resumed["request_count"]
            == first["request_counts"]["canceled"]
            == 40 - first["request_counts"]["succeeded"]
        )
        assert set(billed_successes(emulator).values()) == {1}
        assert batches_created(emulator) == 2


def test_a_kill_records_the_cancel_as_the_jobs_own_so_the_retry_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        operator = create(requests=requests(10), deferrable=True)
        with pytest.raises(TaskDeferred):
            operator.execute(task_context(store))
        emulator.admin.advance_clock(PROCESSING * 0.5)
        operator.on_kill()

        manifest = run_deferred_advancing(
            emulator, create(requests=requests(10), deferrable=True), task_context(store)
        )

        assert [entry["request_count"] for entry in manifest["rounds"]] == [10, 5]
        assert set(billed_successes(emulator).values()) == {1}


def redriven_job() -> list[dict[str, Any]]:
    """Twelve requests, ten of which fail once (round 2 sends them again)."""
    return [request(f"a{i}") for i in range(2)] + [request(f"b{i}", f"q {TRANSIENT}") for i in range(10)]


def round_2_canceled_by_a_person(emulator: Emulator, store: FakeTaskStateStore) -> str:
    """Round 2 is created, its worker goes down, and a person cancels it with 4 of 10 requests done."""
    context = task_context(store)
    settings: dict[str, Any] = {"requests": redriven_job(), "deferrable": True, "redrive": Redrive()}
    with pytest.raises(TaskDeferred) as deferred:
        create(**settings).execute(context)
    emulator.admin.advance_clock(PROCESSING + 1)
    (event,) = asyncio.run(_events(deferred.value.trigger))
    with pytest.raises(TaskDeferred) as round_2:
        create(**settings).execute_complete(context, event=event, **deferred.value.kwargs)
    (batch_id,) = round_2.value.trigger.batch_ids
    emulator.admin.advance_clock(PROCESSING * 0.4)
    AnthropicHook().cancel_batch(batch_id)
    return batch_id


def test_a_persons_cancel_is_not_overridden_by_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        canceled = round_2_canceled_by_a_person(emulator, store)

        with pytest.raises(
            BatchCanceledError, match=f"{canceled}.*not by this job.*unknown.*on_external_cancel"
        ):
            create(requests=redriven_job(), redrive=Redrive()).execute(task_context(store))

        assert batches_created(emulator) == 2


def test_on_external_cancel_resume_sends_only_what_the_canceled_batch_did_not_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        round_2_canceled_by_a_person(emulator, store)
        operator = create(
            requests=redriven_job(), redrive=Redrive(), deferrable=True, on_external_cancel="resume"
        )

        manifest = run_deferred_advancing(emulator, operator, task_context(store))

        assert [entry["request_count"] for entry in manifest["rounds"]] == [12, 10, 6]
        assert [entry["kind"] for entry in manifest["rounds"]] == ["first", "redrive", "resume"]
        assert manifest["request_counts"]["succeeded"] == 12
        assert set(billed_successes(emulator).values()) == {1}
        assert batches_created(emulator) == 3


def test_an_unknown_on_external_cancel_is_refused() -> None:
    with pytest.raises(ValueError, match="on_external_cancel"):
        create(on_external_cancel="override")


def test_a_kill_cancels_even_when_its_record_cannot_be_written_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``on_kill`` runs in a signal handler: a record held up (the interrupted code holds its channel)
    must not hold up the cancel."""
    blocked = threading.Event()

    class StuckStore(FakeTaskStateStore):
        def get(self, key: str, default: Any = None) -> Any:
            if blocked.is_set():
                threading.Event().wait(30)
            return super().get(key, default)

    monkeypatch.setattr(batches_module, "KILL_RECORD_SECONDS", 0.2)
    with running_emulator(monkeypatch, processing_seconds=PROCESSING):
        operator = create(deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(task_context(StuckStore()))
        blocked.set()

        started = time.monotonic()
        operator.on_kill()

        assert time.monotonic() - started < 5
        (batch_id,) = deferred.value.trigger.batch_ids
        assert AnthropicHook().get_batch(batch_id).cancel_initiated_at is not None


def test_a_persons_cancel_seen_while_the_task_waits_fails_it_naming_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        context = task_context()
        with pytest.raises(TaskDeferred) as deferred:
            create(requests=requests(10), deferrable=True).execute(context)
        (batch_id,) = deferred.value.trigger.batch_ids
        emulator.admin.advance_clock(PROCESSING * 0.3)
        AnthropicHook().cancel_batch(batch_id)
        (event,) = asyncio.run(_events(deferred.value.trigger))

        with pytest.raises(BatchCanceledError, match=batch_id):
            create(requests=requests(10), deferrable=True).execute_complete(
                context, event=event, **deferred.value.kwargs
            )

        assert batches_created(emulator) == 1


def test_a_resume_round_is_not_counted_by_max_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last re-drive round allowed times out and is canceled: its retry still sends what it did not
    finish, or those requests would be lost."""
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        context = task_context(store)
        settings: dict[str, Any] = {
            "requests": redriven_job(),
            "deferrable": True,
            "redrive": Redrive(max_rounds=2),
        }
        with pytest.raises(TaskDeferred) as deferred:
            create(**settings).execute(context)
        emulator.admin.advance_clock(PROCESSING + 1)
        (event,) = asyncio.run(_events(deferred.value.trigger))
        with pytest.raises(TaskDeferred) as round_2:
            create(**settings, timeout=0.3).execute_complete(context, event=event, **deferred.value.kwargs)
        emulator.admin.advance_clock(PROCESSING * 0.4)  # 4 of round 2's 10 done when it times out
        (event,) = asyncio.run(_events(round_2.value.trigger))
        with pytest.raises(BatchTimeoutError):
            create(**settings, timeout=0.3).execute_complete(context, event=event, **round_2.value.kwargs)

        manifest = run_deferred_advancing(emulator, create(**settings), task_context(store))

        assert [entry["request_count"] for entry in manifest["rounds"]] == [12, 10, 6]
        assert manifest["request_counts"]["succeeded"] == 12
        assert set(billed_successes(emulator).values()) == {1}


def test_a_deferral_timeout_records_its_cancel_so_the_retry_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        store = FakeTaskStateStore()
        context = task_context(store)
        with pytest.raises(TaskDeferred):
            create(requests=requests(10), deferrable=True).execute(context)
        emulator.admin.advance_clock(PROCESSING * 0.3)
        with pytest.raises(TaskDeferralTimeout):  # Airflow's own deferral timeout, not the trigger's
            create(requests=requests(10), deferrable=True).resume_execution(
                "__fail__", {"error": "Trigger timeout"}, context
            )

        manifest = run_deferred_advancing(
            emulator, create(requests=requests(10), deferrable=True), task_context(store)
        )

        assert [entry["request_count"] for entry in manifest["rounds"]] == [10, 7]
        assert set(billed_successes(emulator).values()) == {1}
