"""AnthropicCreateBatchOperator in process, against the emulator: outcomes, splitting, waiting, retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import (
    BatchCreateUncertainError,
    BatchOutcomeError,
    BatchTimeoutError,
    BatchWaitError,
    RequestValidationError,
)
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import RECORD_KEY
from airflow_provider_batches.links import CONSOLE_BATCHES_URL
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    AirflowSkipException,
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    request,
    requests,
    running_emulator,
    task_context,
)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with running_emulator(monkeypatch) as emu:
        yield emu


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"requests": requests(2), "poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", **settings)


class CrashingCreate(AnthropicCreateBatchOperator):
    """Dies right after the paid create returns, before its id is recorded (a worker crash)."""

    def _create_slice(self, job: Any, part: Any) -> Any:
        super()._create_slice(job, part)
        raise SystemExit("worker died")


# -- happy path ------------------------------------------------------------------------------------


def test_returns_a_manifest_with_batch_ids_fingerprint_and_final_counts(emulator: Emulator) -> None:
    manifest = create(requests=requests(3)).execute(task_context())

    assert len(manifest["batch_ids"]) == 1
    assert manifest["request_count"] == 3
    assert len(manifest["fingerprint"]) == 64
    assert manifest["request_counts"]["succeeded"] == 3


def test_pushes_batch_ids_and_console_link_to_xcom(emulator: Emulator) -> None:
    context = task_context()
    manifest = create().execute(context)

    batch_id = manifest["batch_ids"][0]
    assert context["ti"].xcoms["batch_ids"] == [batch_id]
    assert context["ti"].xcoms["_link_AnthropicBatchLink"] == f"{CONSOLE_BATCHES_URL}/{batch_id}"


def test_reads_requests_from_a_jsonl_file_and_fills_the_model(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    lines = [
        {"custom_id": f"r{i}", "params": {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}
        for i in range(4)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    manifest = create(requests=None, requests_path=str(path), model="claude-emulator-test").execute(
        task_context()
    )

    assert manifest["request_counts"]["succeeded"] == 4


def test_splits_a_big_input_into_several_batches_tracked_as_one_job(emulator: Emulator) -> None:
    manifest = create(requests=requests(5), max_requests_per_batch=2).execute(task_context())

    assert len(manifest["batch_ids"]) == 3
    assert manifest["request_counts"]["succeeded"] == 5
    assert batches_created(emulator) == 3


def test_without_waiting_returns_as_soon_as_the_batches_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600):
        manifest = create(wait_for_completion=False).execute(task_context())

        assert "request_counts" not in manifest
        assert AnthropicHook().get_batch(manifest["batch_ids"][0]).processing_status == "in_progress"


def test_deferrable_defers_to_an_owning_trigger_then_completes(emulator: Emulator) -> None:
    operator = create(deferrable=True, timeout=600)
    context = task_context()

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)

    trigger = deferred.value.trigger
    assert isinstance(trigger, AnthropicBatchTrigger)
    assert trigger.cancel_on_kill
    assert context["ti"].xcoms["batch_ids"] == trigger.batch_ids  # pushed before waiting
    events = asyncio.run(_events(trigger))
    manifest = operator.execute_complete(context, event=events[0])
    assert manifest["batch_ids"] == trigger.batch_ids
    assert manifest["request_counts"]["succeeded"] == 2


async def _events(trigger: AnthropicBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


# -- outcomes --------------------------------------------------------------------------------------


def test_errored_requests_warn_with_counts_per_result_type(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    batch_requests = [
        request("ok"),
        request("bad", "[emulator:errored]"),
        request("late", "[emulator:expired]"),
    ]
    manifest = create(requests=batch_requests).execute(task_context())

    assert manifest["request_counts"] == {
        "processing": 0,
        "succeeded": 1,
        "errored": 1,
        "canceled": 0,
        "expired": 1,
    }
    assert (
        "Some requests did not succeed: 1 succeeded, 1 errored, 0 canceled, 1 expired"
        in capsys.readouterr().out
    )


def test_errored_requests_fail_the_task_with_fail_on_partial_error(emulator: Emulator) -> None:
    operator = create(
        requests=[request("ok"), request("bad", "[emulator:errored]")], fail_on_partial_error=True
    )

    with pytest.raises(BatchOutcomeError, match="1 succeeded, 1 errored"):
        operator.execute(task_context())


def test_every_request_canceled_skips_the_task(emulator: Emulator) -> None:
    operator = create(requests=[request("a", "[emulator:canceled]"), request("b", "[emulator:canceled]")])

    with pytest.raises(AirflowSkipException, match="2 canceled"):
        operator.execute(task_context())


def test_timeout_cancels_the_batches_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600, canceling_seconds=600):
        context = task_context()
        with pytest.raises(BatchTimeoutError):
            create(timeout=0.2).execute(context)

        batch_id = context["ti"].xcoms["batch_ids"][0]
        assert AnthropicHook().get_batch(batch_id).cancel_initiated_at is not None


def test_a_timeout_event_cancels_the_batches_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600, canceling_seconds=600):
        batch = AnthropicHook().create_batch(requests(1))
        event = {"status": "timeout", "batch_ids": [batch.id], "request_counts": {}, "message": "too slow"}

        with pytest.raises(BatchTimeoutError, match="too slow"):
            create().execute_complete(task_context(), event=event, manifest={"batch_ids": [batch.id]})

        assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is not None


def test_resuming_without_a_record_of_the_job_fails_loudly() -> None:
    event = {"status": "success", "batch_ids": ["msgbatch_1"], "request_counts": {}, "message": ""}

    with pytest.raises(BatchWaitError, match="without a record"):
        create().execute_complete(task_context(), event=event)


def test_resuming_with_an_event_of_other_batches_fails_loudly() -> None:
    event = {"status": "success", "batch_ids": ["msgbatch_x"], "request_counts": {}, "message": ""}

    with pytest.raises(BatchWaitError, match="unexpected trigger event"):
        create().execute_complete(task_context(), event=event, manifest={"batch_ids": ["msgbatch_1"]})


def test_on_kill_cancels_the_batches_it_created(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600, canceling_seconds=600):
        operator = create(wait_for_completion=False)
        batch_id = operator.execute(task_context())["batch_ids"][0]

        operator.on_kill()

        assert AnthropicHook().get_batch(batch_id).cancel_initiated_at is not None


# -- validation ------------------------------------------------------------------------------------

RULES = {
    "custom_id-missing": ({"params": request("x")["params"]}, "custom_id is missing"),
    "custom_id-pattern": (request("has space"), "custom_id 'has space' is invalid"),
    "custom_id-too-long": (request("x" * 65), "is invalid"),
    "stream": (request("s", stream=True), "stream"),
    "max_tokens-zero": (request("m", max_tokens=0), "max_tokens must be an integer from 1 to"),
    "model-missing": (
        {"custom_id": "n", "params": {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}},
        "params.model is missing",
    ),
    "unknown-key": ({**request("u"), "extra": 1}, "unknown key"),
}


@pytest.mark.parametrize(("bad", "message"), RULES.values(), ids=RULES.keys())
def test_an_invalid_request_fails_before_any_batch_is_created(
    emulator: Emulator, bad: Any, message: str
) -> None:
    with pytest.raises(RequestValidationError, match=message):
        create(requests=[request("fine"), bad]).execute(task_context())

    assert batches_created(emulator) == 0


def test_duplicate_custom_ids_are_named_with_both_places(emulator: Emulator) -> None:
    with pytest.raises(
        RequestValidationError, match=r"requests\[1\].*'dup'.*duplicates the one at requests\[0\]"
    ):
        create(requests=[request("dup"), request("dup")]).execute(task_context())

    assert batches_created(emulator) == 0


def test_a_bad_file_line_is_named_by_line_number(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(request("ok")) + "\n{not json\n")

    with pytest.raises(RequestValidationError, match="line 2: is not valid JSON"):
        create(requests=None, requests_path=str(path)).execute(task_context())

    assert batches_created(emulator) == 0


def test_requests_and_requests_path_are_exclusive() -> None:
    with pytest.raises(ValueError, match="exactly one of requests"):
        create(requests_path="/tmp/x.jsonl")


# -- retries ---------------------------------------------------------------------------------------


def test_a_retry_after_a_crash_after_create_reattaches(emulator: Emulator) -> None:
    store = FakeTaskStateStore()

    class CrashWhileWaiting(AnthropicCreateBatchOperator):
        def _submit(self, store: Any, job: Any) -> Any:
            super()._submit(store, job)
            raise SystemExit("worker died while waiting")

    with pytest.raises(SystemExit):
        CrashWhileWaiting(task_id="create", requests=requests(2)).execute(task_context(store))
    recorded = [part["batch_id"] for part in store.values[RECORD_KEY]["slices"]]

    manifest = create().execute(task_context(store))

    assert manifest["batch_ids"] == recorded
    assert batches_created(emulator) == 1


def test_a_retry_after_a_timeout_resubmits_the_canceled_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        context = task_context(store)
        with pytest.raises(BatchTimeoutError):
            create(timeout=0.1).execute(context)

        manifest = create(wait_for_completion=False).execute(task_context(store))

        assert manifest["batch_ids"] != context["ti"].xcoms["batch_ids"]
        assert batches_created(emulator) == 2


def test_a_retry_after_a_crash_between_create_and_record_adopts_the_orphan(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    crashing = CrashingCreate(task_id="create", requests=requests(3), deferrable=False, poll_interval=0.05)
    with pytest.raises(SystemExit):
        crashing.execute(task_context(store))
    (orphan,) = [batch.id for batch in AnthropicHook().iter_batches()]

    manifest = create(requests=requests(3)).execute(task_context(store))

    assert manifest["batch_ids"] == [orphan]
    assert batches_created(emulator) == 1


def test_a_retry_of_a_split_job_creates_only_the_missing_batches(emulator: Emulator) -> None:
    store = FakeTaskStateStore()

    class CrashOnSecond(AnthropicCreateBatchOperator):
        def _create_slice(self, job: Any, part: Any) -> Any:
            if part.index == 1:
                raise ConnectionError("network down before the second create was sent")
            return super()._create_slice(job, part)

    with pytest.raises(ConnectionError):
        CrashOnSecond(task_id="create", requests=requests(5), max_requests_per_batch=2).execute(
            task_context(store)
        )

    manifest = create(requests=requests(5), max_requests_per_batch=2).execute(task_context(store))

    assert len(manifest["batch_ids"]) == 3
    assert batches_created(emulator) == 3


def test_a_retry_with_several_possible_orphans_fails_naming_them(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    with pytest.raises(SystemExit):
        CrashingCreate(task_id="create", requests=requests(2)).execute(task_context(store))
    stranger = AnthropicHook().create_batch([request("other-a"), request("other-b")])

    with pytest.raises(BatchCreateUncertainError, match=stranger.id) as uncertain:
        create().execute(task_context(store))

    assert len(uncertain.value.candidate_batch_ids) == 2
    assert batches_created(emulator) == 2


def test_a_retry_with_changed_input_submits_afresh(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    first = create(wait_for_completion=False).execute(task_context(store))
    store.values[RECORD_KEY]["finished"] = False

    second = create(requests=requests(3), wait_for_completion=False).execute(task_context(store))

    assert second["batch_ids"] != first["batch_ids"]
    assert batches_created(emulator) == 2


def test_a_cleared_task_whose_job_finished_submits_afresh(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    first = create().execute(task_context(store))

    second = create().execute(task_context(store))

    assert second["batch_ids"] != first["batch_ids"]


def test_the_intent_is_recorded_before_the_paid_call(emulator: Emulator) -> None:
    store = FakeTaskStateStore()

    class Inspecting(AnthropicCreateBatchOperator):
        def _create_slice(self, job: Any, part: Any) -> Any:
            (slice_record,) = store.values[RECORD_KEY]["slices"]
            assert slice_record["intent_at"]
            assert slice_record["batch_id"] is None
            return super()._create_slice(job, part)

    Inspecting(task_id="create", requests=requests(1), poll_interval=0.05).execute(task_context(store))

    assert store.values[RECORD_KEY]["slices"][0]["batch_id"]
