"""Lost creates on a shared API key: ownership is proven by the results, never guessed from size and time.

Jobs here share one API key, the same batch size and even the same custom_ids (one template), so the
listing cannot tell their batches apart. Each test drives the real create operator against the
emulator, loses creates before or after the server acted (``create_faults``: only creates take them),
and counts creates and cancels through the emulator's stats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import (
    BatchCreateUncertainError,
    BatchTimeoutError,
    RequestValidationError,
)
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import JobRecord, TaskStateJobStore
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.operators import submission as submission_module
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.submission import JobSubmission
from airflow_provider_batches.proof import PROOF_PREFIX, find_proof, is_proof_id
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    recorded_slices,
    request,
    running_emulator,
    task_context,
)

CREATE_ROUTE = "POST /v1/messages/batches"
SIZE = 5


@pytest.fixture(autouse=True)
def quick_listing_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator lists a new batch at once: the operator's pause before its search can be short."""
    monkeypatch.setattr(submission_module, "LISTING_LAG_SECONDS", 0.05)


@pytest.fixture
def slow_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """Batches process for 2 s: a lost create's candidates are still running when it looks."""
    with running_emulator(monkeypatch, processing_seconds=2) as emulator:
        yield emulator


def template(job: str, size: int = SIZE) -> list[dict[str, Any]]:
    """One template's requests: every job has the same custom_ids; the text names the job."""
    return [request(f"q-{index}", f"{job} asks {index}") for index in range(size)]


def create(reqs: list[dict[str, Any]], **kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", requests=reqs, **settings)


def job_b(
    store: FakeTaskStateStore, reqs: list[dict[str, Any]], **kwargs: Any
) -> tuple[AnthropicCreateBatchOperator, JobSubmission]:
    """Job B's operator, its submission (whose paid call a test wraps) the one it runs."""
    operator = create(reqs, wait_for_completion=False, **kwargs)
    b = operator.submission_for(task_context(store), TaskStateJobStore(store), operator.prepare())
    operator.submission_for = lambda *_: b  # type: ignore[method-assign]
    return operator, b


def record_of(store: FakeTaskStateStore) -> JobRecord:
    record = TaskStateJobStore(store).load()
    assert record is not None
    return record


def every_batch() -> dict[str, MessageBatch]:
    return {batch.id: batch for batch in AnthropicHook().iter_batches()}


def cancels(emulator: Emulator) -> int:
    calls = emulator.admin.stats()["calls"]
    return sum(sum(codes.values()) for route, codes in calls.items() if route.endswith("/cancel"))


def answers_of(batch_id: str) -> dict[str, str]:
    """custom_id -> answer text of a batch's results (once it ended), its proof request left out."""
    for _ in range(200):
        if AnthropicHook().get_batch(batch_id).processing_status == "ended":
            break
        time.sleep(0.05)
    return {
        result.custom_id: result.result.message.content[0].text  # type: ignore[union-attr]
        for result in AnthropicHook().iter_results(batch_id)
        if not is_proof_id(result.custom_id)
    }


def proof_ids(store: FakeTaskStateStore) -> list[str]:
    return [part["proof_id"] for part in recorded_slices(store)]


def while_b_creates(
    b: JobSubmission, a_store: FakeTaskStateStore, fault: str, emulator: Emulator
) -> list[str]:
    """Job A (same size, same custom_ids) creates its batch after B's watermark, right before B's
    create, which then meets ``fault``; returns A's batch ids once made."""
    real = b.create
    made: list[str] = []

    def a_creates_then_b(part: Any, watermark: Any, exclude: Any, proof_id: Any) -> Any:
        if not made:
            a = create(template("job-a"), wait_for_completion=False).execute(task_context(a_store))
            made.extend(a["batch_ids"])
            emulator.admin.set_config(create_faults=[fault])
        return real(part, watermark, exclude, proof_id)

    b.create = a_creates_then_b
    return made


# -- two same-size jobs on one key ---------------------------------------------------------------


def test_a_create_lost_before_the_server_never_adopts_the_same_size_batch_another_job_made_meanwhile(
    slow_emulator: Emulator,
) -> None:
    a_store, b_store = FakeTaskStateStore(), FakeTaskStateStore()
    b_operator, b = job_b(b_store, template("job-b"))
    made_by_a = while_b_creates(b, a_store, "drop", slow_emulator)

    b_operator.execute(task_context(b_store))  # waits for A's batch to end, reads it, creates its own
    b_record = record_of(b_store)

    (a_batch,) = made_by_a
    assert b_record.round(1).slices[0].batch_id != a_batch
    assert a_batch in b_record.round(1).slices[0].disproven  # waited for, read, ruled out, left alone
    assert a_batch not in b_record.known_batch_ids
    assert batches_created(slow_emulator) == 2  # A's, and B's one create that reached the server
    assert cancels(slow_emulator) == 0
    assert every_batch()[a_batch].cancel_initiated_at is None
    a_ended = every_batch()[a_batch]
    assert a_ended.request_counts.succeeded == SIZE + 1  # A's requests and A's proof, none canceled
    assert a_ended.request_counts.canceled == 0
    assert all(text.endswith(f"job-a asks {cid[2:]}") for cid, text in answers_of(a_batch).items())
    b_batch = b_record.round(1).slices[0].batch_id or ""
    assert all(text.endswith(f"job-b asks {cid[2:]}") for cid, text in answers_of(b_batch).items())


def test_a_create_lost_after_the_server_acted_proves_and_adopts_its_own_batch_with_no_extra_create(
    slow_emulator: Emulator,
) -> None:
    a_store, b_store = FakeTaskStateStore(), FakeTaskStateStore()
    b_operator, b = job_b(b_store, template("job-b"))
    made_by_a = while_b_creates(b, a_store, "drop_after", slow_emulator)

    b_operator.execute(task_context(b_store))
    b_record = record_of(b_store)

    (a_batch,) = made_by_a
    b_batch = b_record.round(1).slices[0].batch_id or ""
    assert b_batch != a_batch
    assert find_proof(AnthropicHook().iter_results_bytes(b_batch), proof_ids(b_store)[0]) == "succeeded"
    assert batches_created(slow_emulator) == 2  # 0 extra: B's lost create is the batch it adopted
    assert cancels(slow_emulator) == 0
    assert set(answers_of(b_batch)) == {f"q-{index}" for index in range(SIZE)}
    assert all("job-b" in text for text in answers_of(b_batch).values())


def test_a_lost_create_whose_only_candidate_is_a_stranger_with_the_same_custom_ids_creates_its_own(
    emulator: Emulator,
) -> None:
    """Same size, same custom_ids, same moment, and the only batch listed: still not adopted."""
    a_store, b_store = FakeTaskStateStore(), FakeTaskStateStore()
    b_operator, b = job_b(b_store, template("job-a"))  # even the same texts: only the proof differs
    made_by_a = while_b_creates(b, a_store, "drop", emulator)

    b_operator.execute(task_context(b_store))
    b_record = record_of(b_store)

    assert b_record.round(1).slices[0].batch_id not in made_by_a
    assert batches_created(emulator) == 2


def test_a_job_timing_out_while_its_lost_create_is_unproven_cancels_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_emulator(monkeypatch, processing_seconds=600) as emulator:
        a_store, b_store = FakeTaskStateStore(), FakeTaskStateStore()
        b_operator, b = job_b(b_store, template("job-b"), timeout=0.5)
        made_by_a = while_b_creates(b, a_store, "drop", emulator)

        with pytest.raises(BatchTimeoutError, match="None of them was adopted or canceled") as timed_out:
            b_operator.execute(task_context(b_store))
        b_operator.on_kill()  # and a kill now has nothing of its own to cancel

        assert made_by_a[0] in str(timed_out.value)
        assert "Do not cancel them" in str(timed_out.value)
        assert cancels(emulator) == 0
        assert every_batch()[made_by_a[0]].cancel_initiated_at is None
        assert store_batch_ids(b_store) == []
        assert batches_created(emulator) == 1


def store_batch_ids(store: FakeTaskStateStore) -> list[str]:
    return [part["batch_id"] for part in recorded_slices(store) if part["batch_id"]]


def test_a_deferred_job_waits_for_the_candidates_in_the_triggerer_without_acting_on_them(
    slow_emulator: Emulator,
) -> None:
    a_store, b_store = FakeTaskStateStore(), FakeTaskStateStore()
    b_operator, b = job_b(b_store, template("job-b"), deferrable=True)
    made_by_a = while_b_creates(b, a_store, "drop_after", slow_emulator)

    with pytest.raises(TaskDeferred) as deferred:
        b_operator.execute(task_context(b_store))

    trigger: AnthropicBatchTrigger = deferred.value.trigger
    assert deferred.value.method_name == "resume_after_proof"
    assert trigger.cancel_on_kill is False
    assert made_by_a[0] in trigger.batch_ids
    assert store_batch_ids(b_store) == []  # nothing adopted before the proof
    (event,) = asyncio.run(_events(trigger))
    resumed = create(template("job-b"), deferrable=True)
    with pytest.raises(TaskDeferred) as waiting:  # proven: now it waits for its own batch, as usual
        resumed.resume_after_proof(task_context(b_store), event=event)
    assert deferred_method(waiting.value) == "execute_complete"
    (own,) = store_batch_ids(b_store)
    assert own not in made_by_a
    assert find_proof(AnthropicHook().iter_results_bytes(own), proof_ids(b_store)[0]) is not None
    assert batches_created(slow_emulator) == 2
    assert cancels(slow_emulator) == 0


def deferred_method(deferred: Any) -> str:
    return str(deferred.method_name)


async def _events(trigger: AnthropicBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_a_deferred_proof_wait_that_times_out_cancels_nothing(slow_emulator: Emulator) -> None:
    b_store = FakeTaskStateStore()
    event = {"status": "timeout", "batch_ids": ["msgbatch_someone_elses"], "message": "timed out"}

    with pytest.raises(BatchTimeoutError, match="None of them was adopted or canceled"):
        create(template("job-b"), deferrable=True).resume_after_proof(task_context(b_store), event=event)

    assert cancels(slow_emulator) == 0
    assert batches_created(slow_emulator) == 0


def b_fails_fast_while_a_runs(
    b_store: FakeTaskStateStore, emulator: Emulator
) -> tuple[list[str], BatchCreateUncertainError]:
    """Job B (``on_uncertain_create="fail"``) loses its create before the server while A's batch of the
    same size runs: A's batch ids, and B's error."""
    _, b = job_b(b_store, template("job-b"), on_uncertain_create="fail")
    made_by_a = while_b_creates(b, FakeTaskStateStore(), "drop", emulator)
    with pytest.raises(BatchCreateUncertainError) as uncertain:
        b.run()
    return made_by_a, uncertain.value


def test_fail_fast_on_an_uncertain_create_pays_nothing_more_and_says_what_is_known(
    slow_emulator: Emulator,
) -> None:
    b_store = FakeTaskStateStore()

    made_by_a, error = b_fails_fast_while_a_runs(b_store, slow_emulator)

    message = str(error)
    assert error.candidate_batch_ids == made_by_a
    assert made_by_a[0] in message
    assert proof_ids(b_store)[0] in message
    assert "Nothing was adopted, sent again or canceled" in message
    assert "Do not cancel these batches" in message
    assert batches_created(slow_emulator) == 1
    assert cancels(slow_emulator) == 0


def test_a_retry_never_widens_the_window_to_batches_made_after_the_first_search(
    slow_emulator: Emulator,
) -> None:
    b_store = FakeTaskStateStore()
    made_by_a, _ = b_fails_fast_while_a_runs(b_store, slow_emulator)
    later = create(template("job-c"), wait_for_completion=False).execute(task_context())  # same size

    with pytest.raises(BatchCreateUncertainError) as retried:  # a retry, while A's batch still runs
        create(template("job-b"), on_uncertain_create="fail").execute(task_context(b_store))
    manifest = create(template("job-b")).execute(task_context(b_store))  # a retry that waits

    assert retried.value.candidate_batch_ids == made_by_a  # C's batch is never a candidate
    assert manifest["batch_ids"][0] not in [*made_by_a, *later["batch_ids"]]
    assert store_slices(b_store)[0]["disproven"] == made_by_a
    assert cancels(slow_emulator) == 0
    assert batches_created(slow_emulator) == 3


def store_slices(store: FakeTaskStateStore) -> list[dict[str, Any]]:
    return list(recorded_slices(store))


def test_a_deferral_timing_out_while_a_lost_create_is_unproven_cancels_nothing(
    slow_emulator: Emulator,
) -> None:
    b_store = FakeTaskStateStore()
    slow_emulator.admin.set_config(create_faults=["ok", "drop_after"])  # part 2's answer is lost
    with pytest.raises(BatchCreateUncertainError):  # part 1 runs; part 2's candidate is unproven
        create(template("job-b", 2 * SIZE), max_requests_per_batch=SIZE, on_uncertain_create="fail").execute(
            task_context(b_store)
        )
    assert record_of(b_store).proof_pending

    with pytest.raises(Exception, match="Trigger timeout"):  # Airflow's own deferral timeout
        create(template("job-b", 2 * SIZE), max_requests_per_batch=SIZE, deferrable=True).resume_execution(
            "__fail__", {"error": "Trigger timeout"}, task_context(b_store)
        )

    assert cancels(slow_emulator) == 0
    assert all(batch.cancel_initiated_at is None for batch in every_batch().values())


def test_an_input_change_while_a_lost_create_is_unproven_cancels_no_candidate(
    slow_emulator: Emulator,
) -> None:
    b_store = FakeTaskStateStore()
    made_by_a, _ = b_fails_fast_while_a_runs(b_store, slow_emulator)

    edited = create(template("job-b-edited"), on_input_change="cancel_and_resubmit")
    manifest = edited.execute(task_context(b_store))

    assert manifest["batch_ids"][0] not in made_by_a
    assert cancels(slow_emulator) == 0
    assert every_batch()[made_by_a[0]].cancel_initiated_at is None


def test_an_input_using_the_reserved_proof_prefix_is_refused_before_any_call(emulator: Emulator) -> None:
    with pytest.raises(RequestValidationError, match=f"starts with '{PROOF_PREFIX}', which is reserved"):
        create([request(f"{PROOF_PREFIX}mine")]).execute(task_context())

    assert batches_created(emulator) == 0
    assert emulator.admin.stats()["calls"] == {} or CREATE_ROUTE not in emulator.admin.stats()["calls"]


def test_every_batch_carries_one_proof_request_recorded_before_the_paid_call(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    manifest = create(template("job-a", 7), max_requests_per_batch=4).execute(task_context(store))

    records = recorded_slices(store)
    for batch_id, part in zip(manifest["batch_ids"], records, strict=True):
        results = [result.custom_id for result in AnthropicHook().iter_results(batch_id)]
        assert [custom_id for custom_id in results if is_proof_id(custom_id)] == [part["proof_id"]]
        assert manifest["batches"][batch_id]["proof_custom_id"] == part["proof_id"]
        assert every_batch()[batch_id].request_counts.total == part["count"] + 1
    assert len(set(proof_ids(store))) == 2
    assert manifest["request_counts"] == {
        "processing": 0,
        "succeeded": 7,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }


def test_the_proof_request_is_not_counted_as_the_users_when_it_fails(emulator: Emulator) -> None:
    """Every request of the job succeeds; the emulator errors the proof request: the outcome policy
    still sees every request succeeded, with fail_on_partial_error."""
    emulator.admin.set_config(errored_fraction=1.0)
    reqs = [request(f"q-{index}", "[emulator:succeeded]") for index in range(3)]

    manifest = create(reqs, fail_on_partial_error=True).execute(task_context())

    assert manifest["request_counts"]["succeeded"] == 3
    assert manifest["request_counts"]["errored"] == 0


def test_a_sensor_on_the_manifest_does_not_count_the_proof_request_as_the_users(emulator: Emulator) -> None:
    emulator.admin.set_config(errored_fraction=1.0)  # the proof request errors; the job's all succeed
    reqs = [request(f"q-{index}", "[emulator:succeeded]") for index in range(3)]
    manifest = create(reqs, wait_for_completion=False).execute(task_context())
    sensor = AnthropicBatchSensor(
        task_id="wait", batch_id=manifest, fail_on_partial_error=True, poke_interval=0.05, deferrable=False
    )

    result = sensor.execute(task_context())

    assert result["request_counts"]["succeeded"] == 3
    assert result["request_counts"]["errored"] == 0


def test_the_hooks_own_uncertain_create_error_never_advises_canceling_a_candidate(emulator: Emulator) -> None:
    hook = AnthropicHook()
    watermark = hook.create_watermark()
    ours, theirs = hook.create_batch(template("x")), hook.create_batch(template("y"))

    with pytest.raises(BatchCreateUncertainError) as uncertain:
        hook.find_created_batch(watermark, SIZE)

    message = str(uncertain.value)
    assert {ours.id, theirs.id} <= set(uncertain.value.candidate_batch_ids)
    assert "none is canceled" in message
    assert "Do not cancel any of them" in message
    assert "Cancel the one" not in message
