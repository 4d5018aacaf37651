"""Queue-aware submission, against the emulator: ``max_requests_in_flight`` sends a job slice by slice
as its earlier batches end, and a create refused because the processing queue is full (HTTP 429, no
batch made) is sent again later, never paid twice."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.decorators.anthropic_batch import _AnthropicBatchDecoratedOperator
from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.errors import BatchQueueFullError, InputChangedError, RateLimitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import TaskStateJobStore
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.testing import CONNECTION_ENV_VAR
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    recorded_slices,
    request,
    requests,
    task_context,
)

CREATE_ROUTE = "POST /v1/messages/batches"


@pytest.fixture
def queue_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """Batches take 0.6 s; the key's processing queue holds 25 requests; a 429 is not retried by the
    client (``max_retries`` 0), so the operator's own handling of a full queue is what is tested."""
    config = EmulatorConfig(processing_seconds=0.6, canceling_seconds=0, max_queued_requests=25)
    with Emulator(config) as emulator:
        connection = {
            "conn_type": "anthropic",
            "host": emulator.base_url,
            "password": emulator.api_key,
            "extra": {"max_retries": 0},
        }
        monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(connection))
        yield emulator


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {
        "requests": requests(40),
        "max_requests_per_batch": 10,
        "poll_interval": 0.05,
        "deferrable": False,
        **kwargs,
    }
    return AnthropicCreateBatchOperator(task_id="create", **settings)


def listed(emulator: Emulator) -> list[MessageBatch]:
    return sorted(AnthropicHook().iter_batches(), key=lambda batch: batch.created_at)


def most_requests_processing_at_once(batches: list[MessageBatch]) -> int:
    """From the listing: the largest sum of request counts of batches created and not yet ended."""
    events: list[tuple[Any, int]] = []
    for batch in batches:
        assert batch.ended_at is not None
        events += [
            (batch.created_at, batch.request_counts.total),
            (batch.ended_at, -batch.request_counts.total),
        ]
    most = current = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):  # ends before starts
        current += change
        most = max(most, current)
    return most


def create_refusals(emulator: Emulator) -> int:
    return int(emulator.admin.stats()["calls"].get(CREATE_ROUTE, {}).get("429", 0))


# -- max_requests_in_flight -----------------------------------------------------------------------


def test_max_requests_in_flight_sends_the_job_slice_by_slice_within_the_limit(
    queue_emulator: Emulator,
) -> None:
    # two batches of 10 and their proof requests: 22
    manifest = create(max_requests_in_flight=22).execute(task_context())

    batches = listed(queue_emulator)
    assert [batch.id for batch in batches] == manifest["batch_ids"]
    assert len(batches) == 4
    assert most_requests_processing_at_once(batches) <= 22
    assert create_refusals(queue_emulator) == 0  # never asked for more than the queue holds
    assert manifest["request_counts"]["succeeded"] == 40


def test_max_requests_in_flight_caps_the_batch_size(queue_emulator: Emulator) -> None:
    manifest = create(max_requests_per_batch=100_000, max_requests_in_flight=15).execute(task_context())

    # each batch's proof request is in flight with it: 14 of the job's requests and the proof
    assert [entry["request_count"] for entry in manifest["batches"].values()] == [14, 14, 12]
    assert most_requests_processing_at_once(listed(queue_emulator)) <= 15


def test_max_requests_in_flight_must_be_positive_and_needs_waiting() -> None:
    with pytest.raises(ValueError, match="max_requests_in_flight must be an integer of at least 2"):
        create(max_requests_in_flight=0)
    with pytest.raises(ValueError, match="each batch also processes its proof request"):
        create(max_requests_in_flight=1)
    with pytest.raises(ValueError, match="needs wait_for_completion=True"):
        create(max_requests_in_flight=20, wait_for_completion=False)


# -- a full processing queue ------------------------------------------------------------------------


def test_a_create_refused_for_a_full_queue_is_sent_again_once_the_jobs_batches_end(
    queue_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = create().execute(task_context())

    assert create_refusals(queue_emulator) >= 1
    assert batches_created(queue_emulator) == 4  # each refused create made no batch, and none twice
    assert manifest["request_counts"]["succeeded"] == 40
    assert "refused (HTTP 429, no batch made" in capsys.readouterr().out


def test_a_full_queue_with_nothing_of_the_job_in_flight_pauses_then_creates(
    queue_emulator: Emulator,
) -> None:
    other_job = AnthropicHook().create_batch(requests(25))  # fills the key's queue for 0.6 s

    manifest = create(requests=requests(10)).execute(task_context())

    assert create_refusals(queue_emulator) >= 1
    assert other_job.id not in manifest["batch_ids"]
    assert batches_created(queue_emulator) == 2
    assert manifest["request_counts"]["succeeded"] == 10


def test_a_deferred_pause_for_a_full_queue_resumes_before_the_job_has_any_batch(
    queue_emulator: Emulator,
) -> None:
    AnthropicHook().create_batch(requests(25))  # fills the key's queue for 0.6 s
    store = FakeTaskStateStore()
    with pytest.raises(TaskDeferred) as paused:
        create(requests=requests(10), deferrable=True).execute(task_context(store))
    assert paused.value.method_name == "resume_submission"
    queue_emulator.clock.advance(0.7)  # the other job's batch ends: the queue has room

    with pytest.raises(TaskDeferred) as waiting:
        create(requests=requests(10), deferrable=True).resume_submission(task_context(store))

    assert isinstance(waiting.value.trigger, AnthropicBatchTrigger)
    assert batches_created(queue_emulator) == 2


def test_a_refused_create_then_a_lost_answer_is_adopted_not_sent_again(queue_emulator: Emulator) -> None:
    # the calls: watermark, create (429: no batch), watermark, create (made, then its answer lost)
    queue_emulator.admin.set_config(next_faults=["ok", "429", "ok", "drop_after"])

    manifest = create(requests=requests(10)).execute(task_context())

    assert create_refusals(queue_emulator) == 1
    assert batches_created(queue_emulator) == 1
    assert manifest["request_counts"]["succeeded"] == 10


def test_a_queue_full_past_the_timeout_fails_without_creating_any_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = EmulatorConfig(processing_seconds=600, canceling_seconds=0, max_queued_requests=25)
    with Emulator(config) as emulator:
        connection = {"conn_type": "anthropic", "host": emulator.base_url, "password": emulator.api_key}
        monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps({**connection, "extra": {"max_retries": 0}}))
        AnthropicHook().create_batch(requests(25))
        store = FakeTaskStateStore()

        with pytest.raises(BatchQueueFullError, match="nothing was paid for them"):
            create(requests=requests(10), timeout=0.3).execute(task_context(store))

        assert batches_created(emulator) == 1  # only the other job's
        (entry,) = recorded_slices(store)
        assert entry["batch_id"] is None
        assert entry["intent_at"] is None  # a retry has nothing to look for


def test_time_spent_waiting_for_the_jobs_own_batches_does_not_count_against_a_full_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second slice is refused while the first is in flight (2 s), and again once it has ended:
    the queue then stays full for 2.5 s more, within ``timeout`` (4 s) of that second refusal."""
    config = EmulatorConfig(processing_seconds=2, canceling_seconds=0, max_queued_requests=15)
    with Emulator(config) as emulator:
        extra = {"max_retries": 0, "max_requests_per_minute": 0}
        connection = {"conn_type": "anthropic", "host": emulator.base_url, "password": emulator.api_key}
        monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps({**connection, "extra": extra}))
        fuller = threading.Timer(0.5, partial(emulator.admin.set_config, max_queued_requests=5))
        roomier = threading.Timer(4.5, partial(emulator.admin.set_config, max_queued_requests=25))
        fuller.start()
        roomier.start()
        try:
            manifest = create(requests=requests(20), timeout=4).execute(task_context())
        finally:
            fuller.cancel()
            roomier.cancel()

        assert create_refusals(emulator) >= 2
        assert len(manifest["batch_ids"]) == 2
        assert manifest["request_counts"]["succeeded"] == 20


class QueueFullAfterFirstCreate(AnthropicCreateBatchOperator):
    """The processing queue is full for every create after the job's first."""

    creates = 0

    def submission_for(self, context: Any, store: Any, job: Any) -> Any:
        submission = super().submission_for(context, store, job)
        paid = submission.create

        def create(*args: Any) -> MessageBatch:
            type(self).creates += 1
            if type(self).creates > 1:
                raise RateLimitError("processing queue full", status_code=429)
            return paid(*args)

        submission.create = create
        return submission


def test_a_queue_full_past_the_timeout_in_a_re_drive_round_counts_that_rounds_slices(
    queue_emulator: Emulator,
) -> None:
    reqs = [request("a"), request("b", "[emulator:errored_once=overloaded_error]")]
    operator = QueueFullAfterFirstCreate(
        task_id="create", requests=reqs, redrive=Redrive(), poll_interval=0.05, timeout=1, deferrable=False
    )

    with pytest.raises(BatchQueueFullError, match="1 slice\\(s\\) of the job were never created"):
        operator.execute(task_context())

    assert batches_created(queue_emulator) == 1


def test_a_retry_after_a_full_queue_waits_its_own_timeout_for_room(monkeypatch: pytest.MonkeyPatch) -> None:
    config = EmulatorConfig(processing_seconds=600, canceling_seconds=0, max_queued_requests=25)
    with Emulator(config) as emulator:
        connection = {"conn_type": "anthropic", "host": emulator.base_url, "password": emulator.api_key}
        monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps({**connection, "extra": {"max_retries": 0}}))
        AnthropicHook().create_batch(requests(25))  # the queue stays full
        store = FakeTaskStateStore()
        with pytest.raises(BatchQueueFullError):
            create(requests=requests(10), timeout=0.3).execute(task_context(store))
        first_try = create_refusals(emulator)

        with pytest.raises(BatchQueueFullError):
            create(requests=requests(10), timeout=0.3).execute(task_context(store))

        assert create_refusals(emulator) - first_try > 1  # it paused and asked again, not gave up at once


def test_a_refused_create_takes_its_intent_back(queue_emulator: Emulator) -> None:
    operator = create(requests=requests(10))
    store = FakeTaskStateStore()
    job = operator.prepare()
    submission = operator.submission_for(task_context(store), TaskStateJobStore(store), job)

    def refused(*_: Any) -> MessageBatch:
        raise RateLimitError("processing queue full", status_code=429)

    submission.create = refused
    record = submission.run()

    assert record.round(1).slices[0].batch_id is None
    assert record.round(1).slices[0].intent_at is None
    assert record.round(1).slices[0].watermark is None
    assert record.queue_full_since is not None
    assert recorded_slices(store)[0]["intent_at"] is None


def test_without_waiting_a_full_queue_fails_and_the_retry_creates_only_the_rest(
    queue_emulator: Emulator,
) -> None:
    store = FakeTaskStateStore()
    with pytest.raises(BatchQueueFullError, match="2 of 4 batches were created"):
        create(wait_for_completion=False).execute(task_context(store))
    first = [part["batch_id"] for part in recorded_slices(store)[:2]]

    queue_emulator.clock.advance(0.7)  # the first two batches end: the queue has room
    manifest = create(wait_for_completion=False).execute(task_context(store))

    assert manifest["batch_ids"][:2] == first
    assert len(manifest["batch_ids"]) == 4
    assert batches_created(queue_emulator) == 4


# -- deferred waves -----------------------------------------------------------------------------------


async def _events(trigger: AnthropicBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def deferred_waves(settings: dict[str, Any], context: dict[str, Any]) -> tuple[Any, list[list[str]]]:
    """Run a deferrable operator to the end, a fresh operator per resume as in a worker; the manifest
    and the batches each trigger waited for."""
    waves: list[list[str]] = []
    step = partial(create(**settings).execute, context)
    while True:
        try:
            return step(), waves
        except TaskDeferred as deferred:
            trigger: AnthropicBatchTrigger = deferred.trigger
            waves.append(list(trigger.batch_ids))
            (event,) = asyncio.run(_events(trigger))
            step = partial(create(**settings).execute_complete, context, event=event, **deferred.kwargs)


def test_deferred_waves_each_wait_only_for_the_batches_in_flight(queue_emulator: Emulator) -> None:
    manifest, waves = deferred_waves({"deferrable": True, "max_requests_in_flight": 22}, task_context())

    assert [len(wave) for wave in waves] == [2, 2]
    assert [batch_id for wave in waves for batch_id in wave] == manifest["batch_ids"]
    assert manifest["request_counts"]["succeeded"] == 40
    assert most_requests_processing_at_once(listed(queue_emulator)) <= 22


def test_an_input_edited_between_waves_sends_nothing_more(queue_emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in requests(40)))
    context = task_context()
    settings: dict[str, Any] = {"requests": None, "requests_path": str(path), "deferrable": True}
    with pytest.raises(TaskDeferred) as deferred:
        create(**settings, max_requests_in_flight=22).execute(context)
    (event,) = asyncio.run(_events(deferred.value.trigger))
    path.write_text("".join(json.dumps(line) + "\n" for line in requests(40, text="edited")))

    with pytest.raises(InputChangedError, match="2 slice\\(s\\) were not sent"):
        create(**settings, max_requests_in_flight=22).execute_complete(
            context, event=event, **deferred.value.kwargs
        )

    assert batches_created(queue_emulator) == 2


def test_a_retry_between_waves_reattaches_and_creates_only_the_rest(queue_emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    with pytest.raises(TaskDeferred):  # the worker is lost after the first wave was created
        create(deferrable=True, max_requests_in_flight=20).execute(task_context(store))

    manifest = create(max_requests_in_flight=20).execute(task_context(store))

    assert batches_created(queue_emulator) == 4
    assert manifest["request_counts"]["succeeded"] == 40


def test_a_decorated_task_resumed_between_waves_runs_its_function_again(queue_emulator: Emulator) -> None:
    calls: list[int] = []

    def ask() -> list[dict[str, Any]]:
        calls.append(1)
        return requests(40)

    def decorated(**settings: Any) -> AnthropicCreateBatchOperator:
        return _AnthropicBatchDecoratedOperator(task_id="ask", python_callable=ask, **settings)

    settings = {
        "deferrable": True,
        "max_requests_in_flight": 22,
        "max_requests_per_batch": 10,
        "poll_interval": 0.05,
    }
    context = task_context()
    with pytest.raises(TaskDeferred) as deferred:
        decorated(**settings).execute(context)
    (event,) = asyncio.run(_events(deferred.value.trigger))
    with pytest.raises(TaskDeferred) as again:
        decorated(**settings).execute_complete(context, event=event, **deferred.value.kwargs)
    (event,) = asyncio.run(_events(again.value.trigger))
    manifest = decorated(**settings).execute_complete(context, event=event, **again.value.kwargs)

    assert len(calls) == 2  # at the start, and for the held-back slices; not to end the job
    assert manifest["request_counts"]["succeeded"] == 40
    assert batches_created(queue_emulator) == 4


def test_an_input_edited_during_a_pause_for_a_full_queue_is_caught_by_the_next_create(
    queue_emulator: Emulator, tmp_path: Path
) -> None:
    """Every try of a create after a pause reads the input again: edited during the second pause (the
    first try's input already read twice), nothing is created."""
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in requests(10)))
    queue_emulator.admin.set_config(processing_seconds=600)
    AnthropicHook().create_batch(requests(25))  # fills the key's queue until the clock moves
    pauses: list[datetime] = []

    class EditedWhilePaused(AnthropicCreateBatchOperator):
        def pause(self, until: datetime) -> None:
            pauses.append(until)
            if len(pauses) == 2:
                path.write_text("".join(json.dumps(line) + "\n" for line in requests(10, text="edited")))
            super().pause(until)

    operator = EditedWhilePaused(
        task_id="create", requests_path=str(path), poll_interval=0.05, max_requests_per_batch=10
    )
    with pytest.raises(InputChangedError, match="1 slice\\(s\\) were not sent \\(round 1\\)"):
        operator.execute(task_context())

    assert len(pauses) == 2
    assert batches_created(queue_emulator) == 1  # the other job's


def test_a_retry_during_a_deferred_pause_for_a_full_queue_creates_only_the_held_back_slice(
    queue_emulator: Emulator,
) -> None:
    """Wave 1 ended and is recorded; wave 2's create is refused (the queue is full, nothing of the job in
    flight) and the task defers its pause; the pause is lost and Airflow retries the task from
    ``execute``: only wave 2 is created, once, and the job ends with both waves."""
    store = FakeTaskStateStore()
    settings: dict[str, Any] = {"requests": requests(20), "max_requests_in_flight": 11, "deferrable": True}
    with pytest.raises(TaskDeferred) as wave_1:
        create(**settings).execute(task_context(store))
    (first,) = wave_1.value.trigger.batch_ids
    queue_emulator.clock.advance(0.7)  # wave 1 ends
    (event,) = asyncio.run(_events(wave_1.value.trigger))
    AnthropicHook().create_batch(requests(25))  # another job fills the key's queue for 0.6 s
    with pytest.raises(TaskDeferred) as paused:
        create(**settings).execute_complete(task_context(store), event=event, **wave_1.value.kwargs)
    assert paused.value.method_name == "resume_submission"
    assert create_refusals(queue_emulator) == 1
    queue_emulator.clock.advance(0.7)  # the other job's batch ends; the pause never resumes

    with pytest.raises(TaskDeferred) as wave_2:
        create(**settings).execute(task_context(store))  # Airflow's retry
    (second,) = wave_2.value.trigger.batch_ids
    queue_emulator.clock.advance(0.7)
    (ended,) = asyncio.run(_events(wave_2.value.trigger))
    manifest = create(**settings).execute_complete(task_context(store), event=ended, **wave_2.value.kwargs)

    assert manifest["batch_ids"] == [first, second]
    assert manifest["request_counts"]["succeeded"] == 20
    assert batches_created(queue_emulator) == 3  # the two waves and the other job's batch
