"""AnthropicCreateBatchOperator in process, against the emulator: outcomes, splitting, waiting, retries."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import (
    BatchOutcomeError,
    BatchTimeoutError,
    BatchWaitError,
    InputChangedError,
    JobRecordError,
    RequestValidationError,
)
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.identity import digest_of
from airflow_provider_batches.job_state import RECORD_KEY, TaskStateJobStore
from airflow_provider_batches.links import CONSOLE_BATCHES_URL
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.submission import JobSubmission
from airflow_provider_batches.proof import is_proof_id
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    AirflowSkipException,
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    recorded_slices,
    request,
    requests,
    running_emulator,
    task_context,
)
from tests.records import written_by


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"requests": requests(2), "poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", **settings)


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
        context = task_context()
        with pytest.raises(TaskDeferred):
            create(deferrable=True).execute(context)
        (batch_id,) = context["ti"].xcoms["batch_ids"]
        event = {"status": "timeout", "batch_ids": [batch_id], "request_counts": {}, "message": "too slow"}

        with pytest.raises(BatchTimeoutError, match="too slow"):
            create(deferrable=True).execute_complete(context, event=event)

        assert AnthropicHook().get_batch(batch_id).cancel_initiated_at is not None


def test_resuming_without_a_record_of_the_job_fails_loudly() -> None:
    event = {"status": "success", "batch_ids": ["msgbatch_1"], "request_counts": {}, "message": ""}

    with pytest.raises(BatchWaitError, match="without a record"):
        create().execute_complete(task_context(), event=event)


def test_resuming_with_an_event_of_other_batches_fails_loudly(emulator: Emulator) -> None:
    context = task_context()
    with pytest.raises(TaskDeferred):
        create(deferrable=True).execute(context)
    event = {"status": "success", "batch_ids": ["msgbatch_x"], "request_counts": {}, "message": ""}

    with pytest.raises(BatchWaitError, match="unexpected trigger event"):
        create(deferrable=True).execute_complete(context, event=event)


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
    "max_tokens-zero": (request("m", max_tokens=0), "max_tokens must be an integer from 1"),
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


# -- retries: a job only ever owns its own batches, and a retry never pays twice ------------------


def submission_for(store: FakeTaskStateStore, reqs: list[dict[str, Any]], **kwargs: Any) -> JobSubmission:
    """The create operator's submission of ``reqs``, recording in ``store``, its paid call injectable."""
    job = create(requests=reqs, **kwargs).prepare()
    return JobSubmission(
        AnthropicHook(), TaskStateJobStore(store), job, log=logging.getLogger("test"), cancel=lambda *_: None
    )


def die_after_create(submission: JobSubmission) -> None:
    """The worker dies right after the paid create returns, before its id is recorded."""
    real = submission.create

    def call(part: Any, watermark: Any, exclude: Any, proof_id: Any) -> Any:
        real(part, watermark, exclude, proof_id)
        raise SystemExit("worker died")

    submission.create = call


def custom_ids_of(batch_id: str) -> set[str]:
    """The job's custom_ids in a batch's results (the proof request the operator adds left out)."""
    return {
        result.custom_id
        for result in AnthropicHook().iter_results(batch_id)
        if not is_proof_id(result.custom_id)
    }


def named(prefix: str, count: int) -> list[dict[str, Any]]:
    return [request(f"{prefix}-{index}") for index in range(count)]


def test_a_retry_after_a_crash_while_waiting_reattaches(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    submission_for(store, requests(2)).run()  # created and recorded; the worker then dies waiting
    recorded = [part["batch_id"] for part in recorded_slices(store)]

    manifest = create().execute(task_context(store))

    assert manifest["batch_ids"] == recorded
    assert batches_created(emulator) == 1


def test_a_retry_after_a_timeout_keeps_the_canceled_batch_instead_of_resubmitting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        context = task_context(store)
        with pytest.raises(BatchTimeoutError):
            create(timeout=0.1).execute(context)

        manifest = create(wait_for_completion=False).execute(task_context(store))

        assert (
            manifest["batch_ids"] == context["ti"].xcoms["batch_ids"]
        )  # its unfinished: resumed when waited
        assert batches_created(emulator) == 1


def test_a_retry_after_a_crash_between_create_and_record_adopts_its_own_batch(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    crashing = submission_for(store, requests(3))
    die_after_create(crashing)
    with pytest.raises(SystemExit):
        crashing.run()
    (orphan,) = [batch.id for batch in AnthropicHook().iter_batches()]

    manifest = create(requests=requests(3)).execute(task_context(store))

    assert manifest["batch_ids"] == [orphan]
    assert batches_created(emulator) == 1


def test_a_retry_after_a_crash_never_adopts_an_older_batch_of_the_same_size(emulator: Emulator) -> None:
    other_job = AnthropicHook().create_batch(named("other", 3))
    store = FakeTaskStateStore()
    crashing = submission_for(store, named("mine", 3))
    crashing.create = lambda *_: (_ for _ in ()).throw(SystemExit("died before the create was sent"))
    with pytest.raises(SystemExit):
        crashing.run()

    manifest = create(requests=named("mine", 3)).execute(task_context(store))

    assert other_job.id not in manifest["batch_ids"]
    assert custom_ids_of(manifest["batch_ids"][0]) == {f"mine-{index}" for index in range(3)}


def test_a_lost_create_never_adopts_another_jobs_batch_of_the_same_size(emulator: Emulator) -> None:
    job_a = create(requests=named("a", 50), wait_for_completion=False).execute(task_context())
    emulator.admin.set_config(create_faults=["drop"])  # job B's create drops before the server acts

    job_b = create(requests=named("b", 50)).execute(task_context(FakeTaskStateStore()))

    assert set(job_b["batch_ids"]).isdisjoint(job_a["batch_ids"])
    assert custom_ids_of(job_b["batch_ids"][0]) == {f"b-{index}" for index in range(50)}
    assert batches_created(emulator) == 2


def test_a_create_whose_answer_is_lost_after_the_batch_was_made_adopts_it(emulator: Emulator) -> None:
    create(requests=named("a", 50), wait_for_completion=False).execute(task_context())
    emulator.admin.set_config(next_faults=["ok", "drop_after"])

    manifest = create(requests=named("b", 50)).execute(task_context())

    assert custom_ids_of(manifest["batch_ids"][0]) == {f"b-{index}" for index in range(50)}
    assert batches_created(emulator) == 2


def test_a_create_answered_500_after_the_batch_was_made_adopts_it(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["ok", "500_after"])

    manifest = create(requests=named("b", 4)).execute(task_context())

    assert custom_ids_of(manifest["batch_ids"][0]) == {f"b-{index}" for index in range(4)}
    assert batches_created(emulator) == 1


def test_a_lost_create_with_a_same_size_batch_made_in_the_same_moment_adopts_only_its_proven_own(
    emulator: Emulator,
) -> None:
    store = FakeTaskStateStore()
    racing = submission_for(store, named("mine", 5))
    real = racing.create

    def another_job_creates_first(part: Any, watermark: Any, exclude: Any, proof_id: Any) -> Any:
        # another job's batch of the same size (with its own proof), after our watermark
        theirs.append(AnthropicHook().create_batch([*named("mine", 5), request("abp-proof-theirs")]).id)
        emulator.admin.set_config(create_faults=["drop_after"])
        return real(part, watermark, exclude, proof_id)

    theirs: list[str] = []
    racing.create = another_job_creates_first

    record = racing.run()

    assert record.round(1).slices[0].batch_id not in theirs
    assert custom_ids_of(record.round(1).slices[0].batch_id or "") == {f"mine-{index}" for index in range(5)}
    assert batches_created(emulator) == 2


def test_a_split_job_never_adopts_its_own_first_batch_for_a_lost_second_create(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    emulator.admin.set_config(create_faults=["ok", "drop"])  # the second create drops

    manifest = create(requests=named("r", 100), max_requests_per_batch=50).execute(task_context(store))

    first, second = manifest["batch_ids"]
    assert first != second
    assert custom_ids_of(first) == {f"r-{index}" for index in range(50)}
    assert custom_ids_of(second) == {f"r-{index}" for index in range(50, 100)}
    assert manifest["request_counts"]["succeeded"] == 100
    assert batches_created(emulator) == 2


def test_a_split_job_whose_second_answer_is_lost_after_creation_adopts_the_right_batch(
    emulator: Emulator,
) -> None:
    emulator.admin.set_config(create_faults=["ok", "drop_after"])

    manifest = create(requests=named("r", 100), max_requests_per_batch=50).execute(task_context())

    first, second = manifest["batch_ids"]
    assert custom_ids_of(second) == {f"r-{index}" for index in range(50, 100)}
    assert first != second
    assert batches_created(emulator) == 2


def test_a_retry_of_a_split_job_creates_only_the_missing_batches(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    partial = submission_for(store, requests(5), max_requests_per_batch=2)
    real = partial.create

    def network_down_at_second(part: Any, watermark: Any, exclude: Any, proof_id: Any) -> Any:
        if part.index == 1:
            raise ConnectionError("network down before the second create was sent")
        return real(part, watermark, exclude, proof_id)

    partial.create = network_down_at_second
    with pytest.raises(ConnectionError):
        partial.run()

    manifest = create(requests=requests(5), max_requests_per_batch=2).execute(task_context(store))

    assert len(set(manifest["batch_ids"])) == 3
    assert batches_created(emulator) == 3


def test_a_retry_after_the_sync_job_finished_returns_the_same_manifest_without_paying(
    emulator: Emulator,
) -> None:
    store = FakeTaskStateStore()
    first = create().execute(task_context(store))  # then, say, the XCom push fails: Airflow retries

    second = create().execute(task_context(store))

    assert second == first
    assert batches_created(emulator) == 1


def test_a_retry_after_execute_complete_succeeded_returns_the_same_manifest_without_paying(
    emulator: Emulator,
) -> None:
    store = FakeTaskStateStore()
    context = task_context(store)
    with pytest.raises(TaskDeferred) as deferred:
        create(deferrable=True).execute(context)
    event = asyncio.run(_events(deferred.value.trigger))[0]
    first = create(deferrable=True).execute_complete(context, event=event)  # then the worker is lost

    second = create(deferrable=True).execute(task_context(store))  # no TaskDeferred: nothing to wait for

    assert second == first
    assert batches_created(emulator) == 1


def test_a_retry_after_a_partial_failure_fails_the_same_way_without_paying(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    failing = [request("ok"), request("bad", "[emulator:errored]")]
    with pytest.raises(BatchOutcomeError):
        create(requests=failing, fail_on_partial_error=True).execute(task_context(store))

    with pytest.raises(BatchOutcomeError):
        create(requests=failing, fail_on_partial_error=True).execute(task_context(store))

    assert batches_created(emulator) == 1


def test_a_cleared_task_whose_job_finished_submits_afresh(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    first = create().execute(task_context(store, max_tries=0))

    second = create().execute(task_context(store, max_tries=1))  # a clear raises max_tries

    assert second["batch_ids"] != first["batch_ids"]
    assert batches_created(emulator) == 2


def test_a_cleared_task_whose_batches_still_run_reattaches(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        submission_for(store, requests(2)).run()

        manifest = create(wait_for_completion=False).execute(task_context(store, max_tries=3))

        assert manifest["batch_ids"] == [part["batch_id"] for part in recorded_slices(store)]
        assert batches_created(emulator) == 1


def test_a_finished_record_of_the_previous_version_submits_afresh_as_it_did(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    first = create().execute(task_context(store))
    store.values[RECORD_KEY] = written_by("v1", store.values[RECORD_KEY])  # no clear generation in it

    second = create().execute(task_context(store))

    assert second["batch_ids"] != first["batch_ids"]


def test_an_input_edited_between_tries_fails_before_any_paid_call(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        submission_for(store, requests(2)).run()  # try 1 created its batch, then died waiting
        (earlier,) = [part["batch_id"] for part in recorded_slices(store)]

        with pytest.raises(InputChangedError, match=f"{earlier}.*on_input_change='cancel_and_resubmit'"):
            create(requests=requests(3)).execute(task_context(store))

        assert batches_created(emulator) == 1
        assert AnthropicHook().get_batch(earlier).cancel_initiated_at is None


def test_an_input_edited_between_tries_can_cancel_and_resubmit(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        store = FakeTaskStateStore()
        submission_for(store, requests(2)).run()
        (earlier,) = [part["batch_id"] for part in recorded_slices(store)]

        manifest = create(
            requests=requests(3), on_input_change="cancel_and_resubmit", wait_for_completion=False
        ).execute(task_context(store))

        assert AnthropicHook().get_batch(earlier).cancel_initiated_at is not None
        assert earlier not in manifest["batch_ids"]
        assert batches_created(emulator) == 2


def test_an_input_edited_after_the_job_finished_is_not_submitted_on_a_retry(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    create().execute(task_context(store))

    with pytest.raises(InputChangedError, match="ended"):
        create(requests=requests(3)).execute(task_context(store))

    assert batches_created(emulator) == 1


def test_an_unknown_on_input_change_is_refused() -> None:
    with pytest.raises(ValueError, match="on_input_change"):
        create(on_input_change="ignore")


def test_a_record_naming_one_batch_twice_fails_fast_instead_of_waiting_forever(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    submission_for(store, requests(4), max_requests_per_batch=2).run()
    slices = recorded_slices(store)
    slices[1]["batch_id"] = slices[0]["batch_id"]

    with pytest.raises(JobRecordError, match="for two parts of the job"):
        create(requests=requests(4), max_requests_per_batch=2).execute(task_context(store))

    assert batches_created(emulator) == 2


def test_the_intent_and_watermark_are_recorded_before_the_paid_call(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    inspecting = submission_for(store, requests(1))
    real = inspecting.create

    def inspect_then_create(part: Any, watermark: Any, exclude: Any, proof_id: Any) -> Any:
        (slice_record,) = recorded_slices(store)
        assert slice_record["intent_at"]
        assert slice_record["watermark"] == {"newest_id": None, "newest_created_at": None}
        assert slice_record["batch_id"] is None
        return real(part, watermark, exclude, proof_id)

    inspecting.create = inspect_then_create
    inspecting.run()

    assert recorded_slices(store)[0]["batch_id"]


def test_the_manifest_carries_each_batchs_custom_id_digest(emulator: Emulator) -> None:
    manifest = create(requests=named("r", 5), max_requests_per_batch=3).execute(task_context())

    digests = {batch_id: entry["custom_ids_digest"] for batch_id, entry in manifest["batches"].items()}
    assert set(digests) == set(manifest["batch_ids"])
    first, second = manifest["batch_ids"]
    assert digests[first] == digest_of([f"r-{index}" for index in range(3)])
    assert digests[second] == digest_of(["r-3", "r-4"])
