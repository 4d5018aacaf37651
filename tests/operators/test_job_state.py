"""The job record: where it is kept, and how it tells the same job from another."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from airflow_provider_batches.errors import JobRecordError
from airflow_provider_batches.job_state import (
    RECORD_RETENTION,
    JobRecord,
    MemoryJobStore,
    TaskStateJobStore,
    VariableJobStore,
    generation_of,
    job_store_for,
)
from airflow_provider_batches.requests import RequestSource, prepare_job
from tests.operators.support import FakeTaskStateStore, requests


def job(count: int, per_batch: int = 100) -> JobRecord:
    return JobRecord.for_job(prepare_job(RequestSource(requests=requests(count)), max_requests=per_batch))


def test_task_state_store_is_used_when_airflow_offers_it() -> None:
    assert isinstance(job_store_for({"task_state_store": FakeTaskStateStore()}), TaskStateJobStore)


def test_a_variable_is_the_fallback_on_airflows_without_task_state_store() -> None:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=3)

    store = job_store_for({"ti": ti})

    assert isinstance(store, VariableJobStore)
    assert store.key == "anthropic_batch_job__d__r__t__3"


def test_without_a_task_instance_the_record_is_not_durable() -> None:
    assert not job_store_for({}).durable
    assert isinstance(job_store_for({}), MemoryJobStore)


def test_a_record_survives_the_json_round_trip() -> None:
    record = job(3, per_batch=2)
    record.slices[0].batch_id = "msgbatch_1"

    assert JobRecord.from_json(record.to_json()) == record


def test_no_record_stored_reads_as_none() -> None:
    assert JobRecord.from_json(None) is None


@pytest.mark.parametrize("stored", [{"version": 99}, {"version": 2, "slices": "nope"}, "garbage"])
def test_an_unreadable_record_fails_instead_of_resubmitting(stored: object) -> None:
    with pytest.raises(JobRecordError, match="unreadable.*nothing is sent on a guess"):
        JobRecord.from_json(stored)


def test_a_record_written_by_the_previous_version_is_still_read() -> None:
    stored = {
        "version": 1,
        "fingerprint": "f",
        "request_count": 2,
        "slices": [{"count": 2, "sha256": "s", "intent_at": None, "batch_id": "msgbatch_1"}],
        "finished": False,
    }

    record = JobRecord.from_json(stored)

    assert record is not None
    assert record.batch_ids == ["msgbatch_1"]


def test_a_record_naming_one_batch_twice_is_refused() -> None:
    record = job(4, per_batch=2)
    record.slices[0].batch_id = record.slices[1].batch_id = "msgbatch_same"

    with pytest.raises(JobRecordError, match="msgbatch_same for two parts"):
        JobRecord.from_json(record.to_json())


def test_the_record_is_kept_as_long_as_a_batch_and_its_results_live() -> None:
    store = FakeTaskStateStore()
    calls: list[dict[str, object]] = []
    original = store.set

    def recording_set(key: str, value: object, **kwargs: object) -> None:
        calls.append(kwargs)
        original(key, value)

    store.set = recording_set  # type: ignore[method-assign]
    TaskStateJobStore(store).save(job(1))

    assert calls == [{"retention": RECORD_RETENTION}]
    assert timedelta(hours=24) + timedelta(days=29) <= RECORD_RETENTION


def test_an_expired_record_reads_as_expired() -> None:
    record = job(1)
    record.expires_at = "2020-01-01T00:00:00+00:00"

    assert record.is_expired(datetime.now(timezone.utc))


def test_a_clear_is_told_from_a_retry_by_max_tries() -> None:
    assert generation_of({"ti": SimpleNamespace(max_tries=3)}) == 3
    assert generation_of({}) is None


def test_the_same_input_split_another_way_is_another_job() -> None:
    prepared = prepare_job(RequestSource(requests=requests(3)), max_requests=2)

    assert job(3, per_batch=2).matches(prepared)
    assert not job(3, per_batch=3).matches(prepared)
    assert not job(4, per_batch=2).matches(prepared)
