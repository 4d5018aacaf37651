"""The job record: where it is kept, and how it tells the same job from another."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_batches.errors import JobRecordError
from airflow_provider_batches.job_state import (
    RECORD_RETENTION,
    VARIABLE_KEY_LIMIT,
    JobRecord,
    MemoryJobStore,
    TaskStateJobStore,
    VariableJobStore,
    generation_of,
    job_store_for,
    legacy_owners,
    legacy_variable_key,
    variable_key,
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
    assert store.key.startswith("anthropic_batch_job__")
    assert store.key.endswith("__d__r__t__3")


def test_without_a_task_instance_the_record_is_not_durable() -> None:
    assert not job_store_for({}).durable
    assert isinstance(job_store_for({}), MemoryJobStore)


def test_a_record_survives_the_json_round_trip() -> None:
    record = job(3, per_batch=2)
    record.round(1).slices[0].batch_id = "msgbatch_1"

    assert JobRecord.from_json(record.to_json()) == record


def test_no_record_stored_reads_as_none() -> None:
    assert JobRecord.from_json(None) is None


@pytest.mark.parametrize("stored", [{"version": 99}, {"version": 2, "slices": "nope"}, "garbage"])
def test_an_unreadable_record_fails_instead_of_resubmitting(stored: object) -> None:
    with pytest.raises(JobRecordError, match="unreadable.*nothing is sent on a guess"):
        JobRecord.from_json(stored)


def _rounds(*entries: tuple[int, str]) -> dict[str, object]:
    return {
        "version": 4,
        "rounds": [
            {"number": number, "kind": kind, "fingerprint": "f", "request_count": 1, "slices": []}
            for number, kind in entries
        ],
    }


@pytest.mark.parametrize(
    "stored",
    [
        _rounds(),  # no round at all
        _rounds((2, "first")),  # not numbered from 1
        _rounds((1, "first"), (3, "redrive")),  # a round missing
        _rounds((1, "redrive")),  # round 1 sends the whole input
        _rounds((1, "first"), (2, "again")),  # an unknown kind
    ],
    ids=["empty", "from-2", "gap", "first-not-first", "unknown-kind"],
)
def test_a_version_4_record_whose_rounds_do_not_follow_each_other_is_unreadable(stored: object) -> None:
    with pytest.raises(JobRecordError, match="unreadable"):
        JobRecord.from_json(stored)


def test_every_round_is_stored_alike_round_1_first() -> None:
    stored = job(3, per_batch=2).to_json()

    assert stored["version"] == 4
    assert [(entry["number"], entry["kind"]) for entry in stored["rounds"]] == [(1, "first")]
    assert {"fingerprint", "slices", "ended_counts", "redriven"} <= set(stored["rounds"][0])
    assert not {"fingerprint", "slices", "ended_counts", "redriven"} & set(stored)


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
    assert record.all_batch_ids == ["msgbatch_1"]


def test_a_record_naming_one_batch_twice_is_refused() -> None:
    record = job(4, per_batch=2)
    record.round(1).slices[0].batch_id = record.round(1).slices[1].batch_id = "msgbatch_same"

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


# -- the Variable fallback's names (Airflow 3.1-3.2) ------------------------------------------------


class FakeVariables:
    """``airflow.sdk.Variable``'s get/set, over a dict (the metadata DB's variable table)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str, default: Any = None, deserialize_json: bool = False) -> Any:
        if key not in self.values:
            return default
        return json.loads(self.values[key]) if deserialize_json else self.values[key]

    def set(self, key: str, value: Any, serialize_json: bool = False) -> None:
        self.values[key] = json.dumps(value) if serialize_json else value


def ti(dag_id: str, run_id: str, task_id: str = "create", map_index: int = -1) -> SimpleNamespace:
    return SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)


def test_task_instances_whose_names_join_alike_get_two_variable_names() -> None:
    assert legacy_variable_key("etl", "scheduled__2026-12-01", "t", -1) == legacy_variable_key(
        "etl__scheduled", "2026-12-01", "t", -1
    )  # the collision this name ends

    assert variable_key("etl", "scheduled__2026-12-01", "t", -1) != variable_key(
        "etl__scheduled", "2026-12-01", "t", -1
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a", "b__c", "d", -1), ("a__b", "c", "d", -1)),
        (("a", "b", "c__d", -1), ("a", "b__c", "d", -1)),
        (("a", "b", "c", 1), ("a", "b", "c", 11)),
        (("a_", "b", "c", -1), ("a", "_b", "c", -1)),
        (("a", "b", "c", -1), ("a", "b", "c", 0)),
    ],
)
def test_the_variable_name_tells_every_task_instance_apart(
    one: tuple[Any, ...], other: tuple[Any, ...]
) -> None:
    assert variable_key(*one) != variable_key(*other)


def test_the_variable_name_is_readable_and_fits_airflows_key_limit() -> None:
    readable = variable_key("etl", "scheduled__2026-12-01", "create", 3)
    long_one = variable_key("d" * 250, "r" * 250, "t", -1)
    long_other = variable_key("d" * 250, "r" * 250, "u", -1)

    assert readable.endswith("__etl__scheduled__2026-12-01__create__3")
    assert len(long_one) == VARIABLE_KEY_LIMIT
    assert long_one != long_other  # the digest comes first: cutting the names keeps it


def test_a_legacy_name_is_ambiguous_exactly_when_another_task_instance_shares_it() -> None:
    assert set(legacy_owners("etl", "scheduled__2026-12-01", "create", -1)) == {
        ("etl__scheduled", "2026-12-01", "create"),
        ("etl", "scheduled", "2026-12-01__create"),
    }
    assert legacy_owners("etl", "manual-2026-12-01", "create", -1) == []
    assert legacy_owners("a_", "b", "c", -1) == [("a", "_b", "c")]  # "a___b": cut before or after "_"


def test_the_variable_store_keeps_two_colliding_task_instances_apart() -> None:
    variables = FakeVariables()
    one = VariableJobStore(ti("etl", "scheduled__2026-12-01"), variables)
    other = VariableJobStore(ti("etl__scheduled", "2026-12-01"), variables)

    one.save(job(1))
    other.save(job(2))

    loaded_one, loaded_other = one.load(), other.load()
    assert loaded_one is not None
    assert loaded_one.request_count == 1
    assert loaded_other is not None
    assert loaded_other.request_count == 2


def test_a_record_under_a_legacy_name_only_this_task_instance_has_is_still_read() -> None:
    variables = FakeVariables()
    variables.set(legacy_variable_key("etl", "manual-1", "create", -1), job(2).to_json(), serialize_json=True)
    store = VariableJobStore(ti("etl", "manual-1"), variables)

    loaded = store.load()
    assert loaded is not None
    assert loaded.request_count == 2
    store.save(loaded)  # the next save moves it to the new name
    assert store.key in variables.values


def test_a_record_under_a_shared_legacy_name_fails_naming_the_other_owner() -> None:
    variables = FakeVariables()
    legacy = legacy_variable_key("etl", "scheduled__2026-12-01", "create", -1)
    variables.set(legacy, job(2).to_json(), serialize_json=True)

    with pytest.raises(JobRecordError, match=r"'etl__scheduled' run '2026-12-01'.*rename the Variable to"):
        VariableJobStore(ti("etl", "scheduled__2026-12-01"), variables).load()
    with pytest.raises(JobRecordError, match=r"DAG 'etl' run 'scheduled__2026-12-01'"):
        VariableJobStore(ti("etl__scheduled", "2026-12-01"), variables).load()


def test_a_record_under_the_new_name_wins_over_a_shared_legacy_one() -> None:
    variables = FakeVariables()
    variables.set(
        legacy_variable_key("etl", "scheduled__2026-12-01", "create", -1),
        job(2).to_json(),
        serialize_json=True,
    )
    store = VariableJobStore(ti("etl", "scheduled__2026-12-01"), variables)
    store.save(job(3))

    loaded = store.load()
    assert loaded is not None
    assert loaded.request_count == 3
