"""What earlier provider versions left behind keeps working: job records of every earlier version (as
their writers stored them, :mod:`tests.records`) and the method name a deferred task of an earlier
version resumes in. Each is resumed to completion against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_batches._compat import REMOVAL_VERSION
from airflow_provider_batches.decorators.anthropic_batch import _AnthropicBatchDecoratedOperator
from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import RECORD_KEY, RECORD_VERSION, JobRecord, utcnow
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import FakeTaskStateStore, TaskDeferred, batches_created, request, task_context
from tests.records import written_by

TRANSIENT = "[emulator:errored_once=overloaded_error]"
#: Writers from before proof requests: the batches they made carry none.
WRITERS_BEFORE_PROOFS = ["v1", "v2", "v3-redrive", "v3-queue"]


def create(reqs: list[dict[str, Any]], **kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"poll_interval": 0.05, "deferrable": True, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", requests=reqs, **settings)


def plain_job() -> list[dict[str, Any]]:
    return [request(f"req-{index}") for index in range(3)]


def redriven_job() -> list[dict[str, Any]]:
    return [request("a", "question a"), request("b", f"question b {TRANSIENT}")]


def ended_event(trigger: AnthropicBatchTrigger) -> dict[str, Any]:
    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    return event


def resumed_to_the_end(
    deferred: pytest.ExceptionInfo[TaskDeferred],
    store: FakeTaskStateStore,
    reqs: list[dict[str, Any]],
    **settings: Any,
) -> dict[str, Any]:
    """Let each deferred wait end in the trigger and resume the task, until it returns."""
    while True:
        assert isinstance(deferred.value.trigger, AnthropicBatchTrigger)
        event = ended_event(deferred.value.trigger)
        operator = create(reqs, **settings)
        try:
            return operator.execute_complete(task_context(store), event=event, **deferred.value.kwargs)
        except TaskDeferred as again:
            deferred = pytest.ExceptionInfo.from_exc_info((type(again), again, again.__traceback__))


def in_flight_record(writer: str, reqs: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """A job whose one batch an earlier version created (with no proof request: none sent one then),
    recorded as ``writer`` stored it, before the batch ended."""
    job = create(reqs).prepare()
    (part,) = job.slices
    batch = AnthropicHook().create_batch(job.body(part))
    record = JobRecord.for_job(job, generation=0)
    entry = record.round(1).slices[0]
    entry.batch_id, entry.intent_at = batch.id, utcnow().isoformat()
    return written_by(writer, record.to_json()), batch.id


@pytest.mark.parametrize("writer", WRITERS_BEFORE_PROOFS)
def test_a_job_in_flight_recorded_by_an_earlier_version_is_resumed_to_completion(
    writer: str, emulator: Emulator
) -> None:
    emulator.admin.set_config(processing_seconds=600)
    store = FakeTaskStateStore()
    store.values[RECORD_KEY], batch_id = in_flight_record(writer, plain_job())

    with pytest.raises(TaskDeferred) as deferred:
        create(plain_job()).execute(task_context(store))  # the retry on this version
    assert isinstance(deferred.value.trigger, AnthropicBatchTrigger)
    assert deferred.value.trigger.batch_ids == [batch_id]  # re-attached, nothing sent again
    emulator.clock.advance(601)
    manifest = resumed_to_the_end(deferred, store, plain_job())

    assert manifest["batch_ids"] == [batch_id]
    assert manifest["request_counts"]["succeeded"] == 3
    assert batches_created(emulator) == 1
    rewritten = store.values[RECORD_KEY]
    assert rewritten["version"] == RECORD_VERSION
    assert [(entry["number"], entry["kind"]) for entry in rewritten["rounds"]] == [(1, "first")]


def test_a_version_3_record_of_a_job_in_round_2_is_resumed_to_completion(
    emulator: Emulator,
) -> None:
    store = FakeTaskStateStore()
    reqs = redriven_job()
    with pytest.raises(TaskDeferred) as round_1:
        create(reqs, redrive=Redrive()).execute(task_context(store))
    emulator.admin.set_config(processing_seconds=600)
    with pytest.raises(TaskDeferred) as round_2:  # round 1 ended with b overloaded: round 2 sends b
        create(reqs, redrive=Redrive()).execute_complete(
            task_context(store), event=ended_event(round_1.value.trigger), **round_1.value.kwargs
        )
    assert isinstance(round_2.value.trigger, AnthropicBatchTrigger)
    (round_2_batch,) = round_2.value.trigger.batch_ids
    store.values[RECORD_KEY] = written_by("v3", store.values[RECORD_KEY])

    with pytest.raises(TaskDeferred) as retried:
        create(reqs, redrive=Redrive()).execute(task_context(store))
    assert isinstance(retried.value.trigger, AnthropicBatchTrigger)
    assert retried.value.trigger.batch_ids == [round_2_batch]
    emulator.clock.advance(601)
    manifest = resumed_to_the_end(retried, store, reqs, redrive=Redrive())

    assert batches_created(emulator) == 2
    assert [(entry["round"], entry["kind"]) for entry in manifest["rounds"]] == [(1, "first"), (2, "redrive")]
    assert manifest["request_counts"]["succeeded"] == 2
    assert manifest["rounds"][0]["redriven"] == {"errored": 1}


@pytest.mark.parametrize("writer", ["v3-redrive", "v3-queue", "v3"])
def test_a_finished_re_driven_job_recorded_by_version_3_returns_its_outcome_without_a_batch(
    writer: str, emulator: Emulator
) -> None:
    store = FakeTaskStateStore()
    reqs = redriven_job()
    first = create(reqs, redrive=Redrive(), deferrable=False).execute(task_context(store))
    store.values[RECORD_KEY] = written_by(writer, store.values[RECORD_KEY])

    again = create(reqs, redrive=Redrive(), deferrable=False).execute(task_context(store))

    shown = ("batch_ids", "request_count", "fingerprint", "rounds", "request_counts")
    assert {key: again[key] for key in shown} == {key: first[key] for key in shown}
    assert batches_created(emulator) == 2
    if writer == "v3":  # it knew proof requests: nothing is lost at all
        assert again == first


def test_a_task_deferred_by_an_earlier_version_resumes_in_resume_redrive_with_a_warning(
    emulator: Emulator,
) -> None:
    """The first re-drive version deferred ``Redrive.delay`` to ``method_name="resume_redrive"``; a
    trigger serialized then still names it."""
    store = FakeTaskStateStore()
    reqs = redriven_job()
    policy = Redrive(delay=3600)
    with pytest.raises(TaskDeferred) as round_1:
        create(reqs, redrive=policy).execute(task_context(store))
    with pytest.raises(TaskDeferred) as delayed:
        create(reqs, redrive=policy).execute_complete(
            task_context(store), event=ended_event(round_1.value.trigger), **round_1.value.kwargs
        )
    assert delayed.value.method_name == "resume_submission"
    store.values[RECORD_KEY]["rounds"][1]["not_before"] = utcnow().isoformat()  # the delay has passed

    with (
        pytest.warns(AirflowProviderDeprecationWarning, match="resume_redrive") as warned,
        pytest.raises(TaskDeferred) as round_2,
    ):
        create(reqs, redrive=policy).resume_redrive(task_context(store), event=None)
    message = str(warned[0].message)
    assert "resume_submission" in message
    assert f"will be removed in {REMOVAL_VERSION}" in message
    manifest = resumed_to_the_end(round_2, store, reqs, redrive=policy)

    assert manifest["request_counts"]["succeeded"] == 2
    assert batches_created(emulator) == 2


def test_a_decorated_task_deferred_by_an_earlier_version_runs_its_function_again_in_resume_redrive(
    emulator: Emulator,
) -> None:
    """``@task.anthropic_batch`` has no alias of its own: the inherited method resumes through the
    decorated ``resume_submission``, which runs the function again for the round's requests."""
    calls: list[int] = []

    def questions() -> list[dict[str, Any]]:
        calls.append(1)
        return redriven_job()

    def decorated() -> _AnthropicBatchDecoratedOperator:
        return _AnthropicBatchDecoratedOperator(
            task_id="create", python_callable=questions, poll_interval=0.05, deferrable=True, redrive=policy
        )

    store = FakeTaskStateStore()
    policy = Redrive(delay=3600)
    with pytest.raises(TaskDeferred) as round_1:
        decorated().execute(task_context(store))
    with pytest.raises(TaskDeferred):
        decorated().execute_complete(
            task_context(store), event=ended_event(round_1.value.trigger), **round_1.value.kwargs
        )
    store.values[RECORD_KEY]["rounds"][1]["not_before"] = utcnow().isoformat()
    before = len(calls)

    with pytest.warns(AirflowProviderDeprecationWarning), pytest.raises(TaskDeferred) as round_2:
        decorated().resume_redrive(task_context(store), event=None)

    assert len(calls) > before  # the function gave the round's requests again
    assert isinstance(round_2.value.trigger, AnthropicBatchTrigger)
    assert batches_created(emulator) == 2


class Crash(Exception):
    """The worker dies here (a lost worker, an OOM kill): the next try starts from ``execute``."""


@pytest.mark.parametrize("step", ["plan_next", "complete", "outcome"])
def test_a_version_3_record_resumed_by_this_version_then_crashed_is_retried_without_a_batch(
    step: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v3 record in round 2 is resumed by this version's execute_complete (which rewrites it as v4),
    the worker dies at ``step`` after the round's counts are saved, and the retry finishes the job from
    the v4 record with no create."""
    from airflow_provider_batches.operators import drive as drive_module
    from airflow_provider_batches.operators import rounds as rounds_module

    store = FakeTaskStateStore()
    reqs = redriven_job()
    with pytest.raises(TaskDeferred) as round_1:
        create(reqs, redrive=Redrive()).execute(task_context(store))
    with pytest.raises(TaskDeferred) as round_2:
        create(reqs, redrive=Redrive()).execute_complete(
            task_context(store), event=ended_event(round_1.value.trigger), **round_1.value.kwargs
        )
    store.values[RECORD_KEY] = written_by("v3", store.values[RECORD_KEY])
    owner = {"plan_next": rounds_module.JobRounds, "complete": drive_module.JobDrive}.get(
        step, drive_module.JobDrive
    )
    original = getattr(owner, step)
    crashed: list[str] = []

    def crash_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not crashed and (step != "plan_next" or len(args[0].rounds) == 2):
            crashed.append(step)
            if step == "complete":  # dies right after the finished record is saved
                original(self, *args, **kwargs)
            raise Crash(step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, step, crash_once)
    with pytest.raises(Crash):
        create(reqs, redrive=Redrive()).execute_complete(
            task_context(store), event=ended_event(round_2.value.trigger), **round_2.value.kwargs
        )
    assert store.values[RECORD_KEY]["version"] == RECORD_VERSION

    manifest = create(reqs, redrive=Redrive()).execute(task_context(store))  # the retry

    assert batches_created(emulator) == 2
    assert manifest["request_counts"]["succeeded"] == 2
    assert [(entry["round"], entry["kind"]) for entry in manifest["rounds"]] == [(1, "first"), (2, "redrive")]
