"""Re-drive: failed requests submitted again as follow-up rounds, retry-safe, against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchOutcomeError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import RECORD_KEY, JobRecord
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.submission import JobSubmission
from airflow_provider_batches.proof import is_proof_id
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.requests import PreparedJob
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    request,
    task_context,
)
from tests.records import written_by


def job(**outcomes: str) -> list[dict[str, Any]]:
    """Requests named by their marker text: ``job(a="", b="[emulator:errored_once=overloaded_error]")``."""
    return [request(custom_id, f"question {custom_id} {marker}") for custom_id, marker in outcomes.items()]


def create(reqs: list[dict[str, Any]], **kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"poll_interval": 0.05, "deferrable": False, "redrive": Redrive(), **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", requests=reqs, **settings)


def results_of(batch_id: str) -> dict[str, str]:
    """The job's results in a batch (the proof request the operator adds left out)."""
    return {
        result.custom_id: result.result.type
        for result in AnthropicHook().iter_results(batch_id)
        if not is_proof_id(result.custom_id)
    }


def submitted_ids(round_entry: dict[str, Any]) -> set[str]:
    return {custom_id for batch_id in round_entry["batch_ids"] for custom_id in results_of(batch_id)}


TRANSIENT = "[emulator:errored_once=overloaded_error]"


def test_a_transient_error_is_re_driven_once_and_the_final_outcome_is_complete(emulator: Emulator) -> None:
    manifest = create(job(a="", b=TRANSIENT, c="[emulator:expired_once]")).execute(task_context())

    first, second = manifest["rounds"]
    assert first["request_counts"] == {
        "processing": 0,
        "succeeded": 1,
        "errored": 1,
        "canceled": 0,
        "expired": 1,
    }
    assert first["redriven"] == {"errored": 1, "expired": 1}
    assert submitted_ids(second) == {"b", "c"}
    assert second["request_counts"]["succeeded"] == 2
    assert manifest["request_counts"] == {
        "processing": 0,
        "succeeded": 3,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batches_created(emulator) == 2


def test_a_request_failing_twice_takes_three_rounds(emulator: Emulator) -> None:
    manifest = create(job(a="", b="[emulator:errored_twice=api_error]", c=TRANSIENT)).execute(task_context())

    assert [entry["request_count"] for entry in manifest["rounds"]] == [3, 2, 1]
    assert submitted_ids(manifest["rounds"][2]) == {"b"}
    assert manifest["request_counts"]["succeeded"] == 3
    assert len(manifest["batch_ids"]) == 3


def test_max_rounds_bounds_the_rounds_and_the_final_outcome_keeps_the_last_error(emulator: Emulator) -> None:
    manifest = create(job(a="", b="[emulator:errored=api_error]"), redrive=Redrive(max_rounds=2)).execute(
        task_context()
    )

    assert len(manifest["rounds"]) == 2
    assert manifest["request_counts"]["errored"] == 1
    assert manifest["request_counts"]["succeeded"] == 1
    assert batches_created(emulator) == 2


def test_permanent_errors_and_canceled_requests_are_left_alone(emulator: Emulator) -> None:
    reqs = [
        *job(ok="", invalid="[emulator:errored=invalid_request_error]", canceled="[emulator:canceled]"),
        request("unknown_model", "hi", model="gpt-4"),
    ]

    manifest = create(reqs, check_models=False).execute(task_context())  # the unknown model reaches the API

    assert [entry["redriven"] for entry in manifest["rounds"]] == [{}]
    assert manifest["request_counts"]["errored"] == 2
    assert manifest["request_counts"]["canceled"] == 1
    assert batches_created(emulator) == 1


def test_only_the_error_types_asked_for_are_re_driven(emulator: Emulator) -> None:
    reqs = job(over=TRANSIENT, api="[emulator:errored_once=api_error]")

    manifest = create(reqs, redrive=Redrive(error_types=("api_error",))).execute(task_context())

    assert submitted_ids(manifest["rounds"][1]) == {"api"}
    assert manifest["request_counts"]["errored"] == 1


def test_canceled_requests_are_re_driven_when_asked(emulator: Emulator) -> None:
    reqs = job(ok="", c="[emulator:canceled_once]")

    manifest = create(reqs, redrive=Redrive(include_canceled=True)).execute(task_context())

    assert submitted_ids(manifest["rounds"][1]) == {"c"}
    assert manifest["request_counts"]["succeeded"] == 2


def test_fail_on_partial_error_judges_the_outcome_after_every_round(emulator: Emulator) -> None:
    manifest = create(job(a="", b=TRANSIENT), fail_on_partial_error=True).execute(task_context())
    assert manifest["request_counts"]["succeeded"] == 2

    with pytest.raises(BatchOutcomeError, match="1 errored"):
        create(
            job(x="[emulator:errored=api_error]"), fail_on_partial_error=True, redrive=Redrive(max_rounds=2)
        ).execute(task_context())


def test_the_manifest_gives_the_custom_id_digest_of_every_round_s_batches(emulator: Emulator) -> None:
    manifest = create(job(a="", b=TRANSIENT)).execute(task_context())

    second_batch = manifest["rounds"][1]["batch_ids"][0]
    assert manifest["batches"][second_batch]["request_count"] == 1
    assert set(manifest["batches"]) == set(manifest["batch_ids"])


def test_a_round_is_split_by_the_same_limits(emulator: Emulator) -> None:
    reqs = job(a=TRANSIENT, b=TRANSIENT, c=TRANSIENT, d="")

    manifest = create(reqs, max_requests_per_batch=2).execute(task_context())

    assert [len(entry["batch_ids"]) for entry in manifest["rounds"]] == [2, 2]


def test_a_file_input_re_drives_its_original_lines(emulator: Emulator, tmp_path: Any) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        '{"custom_id": "a", "params": {"max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}}\n'
        '{"custom_id":"b","params":{"max_tokens":9,"messages":[{"role":"user","content":"y '
        + TRANSIENT
        + '"}]}}\n'
    )
    operator = AnthropicCreateBatchOperator(
        task_id="create",
        requests_path=str(path),
        model="claude-emulator-test",
        redrive=Redrive(),
        deferrable=False,
        poll_interval=0.05,
    )

    manifest = operator.execute(task_context())

    assert submitted_ids(manifest["rounds"][1]) == {"b"}
    assert manifest["request_counts"]["succeeded"] == 2


# -- retry safety ----------------------------------------------------------------------------------


class DiesInRound2(AnthropicCreateBatchOperator):
    """The worker dies right after round 2's paid create returns, before its id is recorded."""

    def submission_for(self, context: Any, store: Any, job: PreparedJob) -> JobSubmission:
        submission = super().submission_for(context, store, job)
        if job.request_count < 3:  # a follow-up round
            real = submission.create

            def create_then_die(part: Any, watermark: Any, exclude: Any, proof_id: Any) -> Any:
                real(part, watermark, exclude, proof_id)
                raise SystemExit("worker died")

            submission.create = create_then_die
        return submission


def test_a_retry_after_a_lost_round_2_create_adopts_its_batch_and_sends_nothing_twice(
    emulator: Emulator,
) -> None:
    store = FakeTaskStateStore()
    reqs = job(a="", b=TRANSIENT, c=TRANSIENT)
    dying = DiesInRound2(
        task_id="create", requests=reqs, redrive=Redrive(), deferrable=False, poll_interval=0.05
    )
    with pytest.raises(SystemExit):
        dying.execute(task_context(store))
    assert batches_created(emulator) == 2

    manifest = create(reqs).execute(task_context(store))

    assert batches_created(emulator) == 2
    assert len(manifest["rounds"]) == 2
    assert manifest["request_counts"]["succeeded"] == 3


def test_a_retry_while_round_2_waits_re_attaches_to_round_2(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    reqs = job(a="", b=TRANSIENT)
    with pytest.raises(TaskDeferred) as first:
        create(reqs, deferrable=True).execute(task_context(store))
    event = asyncio.run(_events(first.value.trigger))[0]
    with pytest.raises(TaskDeferred) as second:  # round 1 ended: round 2 submitted and deferred
        create(reqs, deferrable=True).execute_complete(task_context(store), event=event)
    round_2 = second.value.trigger.batch_ids
    assert second.value.kwargs["round"] == 2

    with pytest.raises(TaskDeferred) as retried:  # the worker was lost: a retry of the task
        create(reqs, deferrable=True).execute(task_context(store))

    assert retried.value.trigger.batch_ids == round_2
    assert batches_created(emulator) == 2
    event = asyncio.run(_events(retried.value.trigger))[0]
    manifest = create(reqs, deferrable=True).execute_complete(task_context(store), event=event)
    assert manifest["request_counts"]["succeeded"] == 2
    assert batches_created(emulator) == 2


def test_a_retry_on_a_previous_versions_record_never_submits_an_ended_round_again(emulator: Emulator) -> None:
    """The record of the version before slice counts (``SliceRecord.ended_counts``): round 1 ended, a
    person canceled its batch mid-way, round 2 waits; the task is retried on this version."""
    store = FakeTaskStateStore()
    reqs = job(a="", b="")
    redrive = Redrive(include_canceled=True)
    emulator.admin.set_config(processing_seconds=60)
    with pytest.raises(TaskDeferred) as first:
        create(reqs, deferrable=True, redrive=redrive).execute(task_context(store))
    AnthropicHook().cancel_batch(first.value.trigger.batch_ids[0])
    emulator.admin.set_config(processing_seconds=0)
    event = asyncio.run(_events(first.value.trigger))[0]
    with pytest.raises(TaskDeferred):  # round 1 ended (canceled): round 2 submitted and deferred
        create(reqs, deferrable=True, redrive=redrive).execute_complete(task_context(store), event=event)
    record = store.values[RECORD_KEY] = written_by("v3", store.values[RECORD_KEY])
    for part in [*record["slices"], *(part for later in record["rounds"] for part in later["slices"])]:
        del part["ended_counts"]
    del record["queue_full_since"]

    manifest = create(reqs, redrive=redrive).execute(task_context(store))

    assert batches_created(emulator) == 2
    assert manifest["request_counts"]["succeeded"] == 2


def test_deferrable_rounds_wait_in_the_trigger_and_finish(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    reqs = job(a="", b="[emulator:errored_twice=overloaded_error]")
    operator = create(reqs, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(task_context(store))
    rounds_waited = 0
    while True:
        assert isinstance(deferred.value.trigger, AnthropicBatchTrigger)
        event = asyncio.run(_events(deferred.value.trigger))[0]
        rounds_waited += 1
        try:
            manifest = operator.execute_complete(task_context(store), event=event, **deferred.value.kwargs)
            break
        except TaskDeferred as again:
            deferred = pytest.ExceptionInfo.from_exc_info((type(again), again, again.__traceback__))

    assert rounds_waited == 3
    assert manifest["request_counts"]["succeeded"] == 2


def test_a_finished_re_driven_job_returns_its_manifest_on_retry_without_any_call(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    reqs = job(a="", b=TRANSIENT)
    first = create(reqs).execute(task_context(store))

    again = create(reqs).execute(task_context(store))

    assert again == first
    assert batches_created(emulator) == 2


def test_a_version_2_record_is_still_read() -> None:
    data = {
        "version": 2,
        "fingerprint": "f",
        "request_count": 1,
        "slices": [{"count": 1, "sha256": "s", "ids_digest": "d", "batch_id": "msgbatch_1"}],
        "finished": True,
        "ended_counts": {"msgbatch_1": {"succeeded": 1}},
    }

    record = JobRecord.from_json(data)

    assert record is not None
    assert [(each.number, each.kind) for each in record.rounds] == [(1, "first")]
    assert record.all_batch_ids == ["msgbatch_1"]


def test_redrive_refuses_permanent_error_types_and_needs_a_wait() -> None:
    with pytest.raises(ValueError, match="invalid_request_error"):
        Redrive(error_types=("invalid_request_error",))
    with pytest.raises(ValueError, match="wait_for_completion"):
        create(job(a=""), wait_for_completion=False)


async def _events(trigger: AnthropicBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]
