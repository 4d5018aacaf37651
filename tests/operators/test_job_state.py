"""The job record: where it is kept, and how it tells the same job from another."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_provider_batches.job_state import (
    JobRecord,
    MemoryJobStore,
    TaskStateJobStore,
    VariableJobStore,
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


def test_an_unreadable_record_is_ignored() -> None:
    assert JobRecord.from_json({"version": 99}) is None
    assert JobRecord.from_json({"version": 1, "slices": "nope"}) is None


def test_the_same_input_split_another_way_is_another_job() -> None:
    prepared = prepare_job(RequestSource(requests=requests(3)), max_requests=2)

    assert job(3, per_batch=2).matches(prepared)
    assert not job(3, per_batch=3).matches(prepared)
    assert not job(4, per_batch=2).matches(prepared)
