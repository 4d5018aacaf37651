"""What the Batches view shows of a job, from stored records and manifests (no database, no browser)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_batches.job_state import JobRecord, variable_key
from airflow_provider_batches.plugins.jobs import (
    JobSource,
    TaskKey,
    build_job,
    spend_by_day,
    task_instance_path,
)
from airflow_provider_batches.plugins.store import read_variable_name

KEY = TaskKey("dag_a", "manual__2026-12-04T10:00:00+00:00", "create", -1)
T0 = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
ENDED = {"processing": 0, "succeeded": 8, "errored": 1, "canceled": 0, "expired": 1}


def _slice(
    batch_id: str | None, count: int, at: datetime | None, ended: dict[str, int] | None
) -> dict[str, Any]:
    return {
        "count": count,
        "sha256": "s" * 8,
        "ids_digest": "d",
        "intent_at": at.isoformat() if at else None,
        "batch_id": batch_id,
        "ended_counts": ended,
    }


def _record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "version": 3,
        "fingerprint": "f",
        "request_count": 10,
        "slices": [_slice("b1", 10, T0, ENDED)],
        "ended_counts": {"b1": ENDED},
        "finished": True,
        "redrive": {"max_rounds": 3},
        "redriven": {"errored": 1, "expired": 1},
        "rounds": [
            {
                "number": 2,
                "fingerprint": "g",
                "request_count": 2,
                "slices": [
                    _slice("b2", 2, T0 + timedelta(minutes=5), {**dict.fromkeys(ENDED, 0), "succeeded": 2})
                ],
                "ended_counts": {"b2": {**dict.fromkeys(ENDED, 0), "succeeded": 2}},
                "redriven": {},
            }
        ],
    }
    record.update(changes)
    return record


def _transfer(batch_ids: list[str], cost: float, estimate: float | None = None) -> dict[str, Any]:
    return {
        "manifest_version": 1,
        "destination": "s3://bucket/out",
        "batch_ids": batch_ids,
        "written_at": "2026-12-04T11:00:00+00:00",
        "files": [{"uri": "s3://bucket/out/results.jsonl", "results": 10, "bytes": 100}],
        "spend": {"cost_usd": cost, "estimated_cost_usd": estimate, "complete": True, "unpriced_models": []},
    }


def test_a_record_of_version_3_and_its_version_4_rewrite_show_the_same_job() -> None:
    """Version 4 keeps round 1 in ``rounds`` like the others; the view reads both, alike."""
    stored_v4 = JobRecord.from_json(_record()).to_json()  # type: ignore[union-attr]
    assert stored_v4["version"] == 4
    assert "slices" not in stored_v4

    job_v3 = build_job(JobSource(KEY, _record(), "task_state_store"))
    job_v4 = build_job(JobSource(KEY, stored_v4, "task_state_store"))

    assert job_v4 == job_v3
    assert [(r["number"], r["kind"]) for r in job_v4["rounds"]] == [(1, "first"), (2, "redrive")]


def test_a_redriven_job_shows_each_round_with_its_batches_and_final_counts() -> None:
    job = build_job(JobSource(KEY, _record(), "task_state_store"))
    assert [r["number"] for r in job["rounds"]] == [1, 2]
    assert job["rounds"][0]["batches"][0]["counts"] == ENDED
    assert job["counts"] == {"processing": 0, "succeeded": 10, "errored": 0, "canceled": 0, "expired": 0}
    assert job["state"] == "finished"
    assert job["batch_ids"] == ["b1", "b2"]


def test_a_batch_not_ended_counts_all_its_requests_as_processing() -> None:
    record = _record(
        slices=[_slice("b1", 10, T0, None)], ended_counts=None, finished=False, rounds=[], redriven=None
    )
    job = build_job(JobSource(KEY, record, "task_state_store"))
    assert job["rounds"][0]["batches"][0]["counts"]["processing"] == 10
    assert job["state"] == "processing"
    assert job["counts"] is None


def test_slices_created_minutes_apart_are_separate_waves_and_held_back_slices_none() -> None:
    slices = [
        _slice("b1", 5, T0, ENDED),
        _slice("b2", 5, T0 + timedelta(seconds=2), ENDED),
        _slice("b3", 5, T0 + timedelta(minutes=10), None),
        _slice(None, 5, None, None),
    ]
    record = _record(
        slices=slices, ended_counts=None, finished=False, rounds=[], redriven=None, request_count=20
    )
    job = build_job(JobSource(KEY, record, "task_state_store"))
    assert [b["wave"] for b in job["rounds"][0]["batches"]] == [1, 1, 2, 0]
    assert job["waves"] == 2
    assert job["rounds"][0]["held_back"] == 1


def test_estimated_and_actual_cost_come_from_the_transfer_that_names_the_jobs_batches() -> None:
    source = JobSource(
        KEY,
        _record(),
        "task_state_store",
        transfer_manifests=[_transfer(["other"], 9.0, 9.5), _transfer(["b1", "b2"], 0.25, 1.5)],
    )
    job = build_job(source)
    assert job["actual_cost_usd"] == 0.25
    assert job["estimated_cost_usd"] == 1.5
    assert job["results"]["destination"] == "s3://bucket/out"


def test_without_an_estimate_in_the_transfer_the_runs_token_count_of_the_same_size_is_used() -> None:
    estimates = [
        {"request_count": 99, "estimated_cost_usd": {"total_max": 7.0}},
        {"request_count": 10, "estimated_cost_usd": {"total_max": 0.75}},
    ]
    job = build_job(
        JobSource(
            KEY, _record(), "Variable", transfer_manifests=[_transfer(["b1"], 0.2)], estimates=estimates
        )
    )
    assert job["estimated_cost_usd"] == 0.75


def test_final_error_types_read_from_the_results_come_first_then_the_redriven_ones() -> None:
    types = [
        {"type": "not_found_error", "count": 3, "example": "model: claude-sonet-4-6", "rounds": [1]},
        {"type": "overloaded_error", "count": 1, "example": "Overloaded", "rounds": [2]},
    ]
    create = {"errors": {"failed": 4, "read": 4, "types": types}}
    job = build_job(JobSource(KEY, _record(), "task_state_store", create_manifest=create))
    assert [(e["type"], e["count"], e["source"], e["example"], e["rounds"]) for e in job["error_types"]] == [
        ("not_found_error", 3, "results", "model: claude-sonet-4-6", [1]),
        ("overloaded_error", 1, "results", "Overloaded", [2]),
        ("errored", 1, "re-driven", "", []),
        ("expired", 1, "re-driven", "", []),
    ]


def test_without_a_summary_from_the_results_the_redriven_failures_are_shown_per_result_type() -> None:
    job = build_job(JobSource(KEY, _record(), "task_state_store", create_manifest={"errors": {"types": []}}))
    assert [(e["type"], e["count"], e["source"]) for e in job["error_types"]] == [
        ("errored", 1, "re-driven"),
        ("expired", 1, "re-driven"),
    ]


def test_an_unreadable_record_is_shown_as_such_not_dropped_or_guessed() -> None:
    job = build_job(JobSource(KEY, {"version": 99}, "task_state_store"))
    assert job["state"] == "unreadable"
    assert "unreadable" in job["problem"]
    assert job["rounds"] == []


def test_the_task_instance_link_escapes_run_ids_and_names_the_map_index() -> None:
    assert task_instance_path(KEY) == "dags/dag_a/runs/manual__2026-12-04T10%3A00%3A00%2B00%3A00/tasks/create"
    mapped = TaskKey("d", "r/1", "t", 3)
    assert task_instance_path(mapped) == "dags/d/runs/r%2F1/tasks/t/mapped/3"


def test_spend_is_summed_per_day_and_dag_inside_the_window_only() -> None:
    jobs = [
        {
            "dag_id": "a",
            "results": {"written_at": "2026-12-04T10:00:00+00:00"},
            "actual_cost_usd": 1.0,
            "estimated_cost_usd": 2.0,
        },
        {
            "dag_id": "a",
            "results": {"written_at": "2026-12-04T20:00:00+00:00"},
            "actual_cost_usd": 0.5,
            "estimated_cost_usd": None,
        },
        {
            "dag_id": "b",
            "results": None,
            "created_at": "2026-12-03T09:00:00+00:00",
            "actual_cost_usd": None,
            "estimated_cost_usd": 4.0,
        },
        {"dag_id": "c", "results": {"written_at": "2026-10-01T00:00:00+00:00"}, "actual_cost_usd": 100.0},
    ]
    spend = spend_by_day(jobs, today=date(2026, 12, 4), days=7)
    assert spend["days"][0] == "2026-11-28"
    assert spend["days"][-1] == "2026-12-04"
    assert spend["actual"] == {"2026-12-04": {"a": 1.5}}
    assert spend["estimated"] == {"2026-12-04": {"a": 2.0}, "2026-12-03": {"b": 4.0}}
    assert spend["dags"] == ["a", "b"]
    assert spend["total_actual_usd"] == 1.5


@pytest.mark.parametrize(
    ("name", "readings"),
    [
        ("anthropic_batch_job__dag__run__task__-1", [("dag", "run", "task", -1)]),
        (
            "anthropic_batch_job__dag__run__my__task__3",
            [("dag", "run", "my__task", 3), ("dag", "run__my", "task", 3)],
        ),
        ("anthropic_batch_job__my__dag__run__task__0", [("my__dag", "run", "task", 0)]),
        ("anthropic_batch_job__other__run__task__-1", []),
        ("anthropic_batch_job__dag__run__task__x", []),
    ],
)
def test_a_variable_name_is_read_every_way_its_double_underscores_allow_in_readable_dags_only(
    name: str, readings: list[tuple[str, str, str, int]]
) -> None:
    assert read_variable_name(name, {"dag", "my__dag"}) == [TaskKey(*reading) for reading in readings]


@pytest.mark.parametrize(
    "key", [("dag", "run", "task", -1), ("my__dag", "scheduled__2026-12-01", "my__task", 3)]
)
def test_a_current_record_name_is_read_back_as_exactly_its_task_instance(
    key: tuple[str, str, str, int],
) -> None:
    assert read_variable_name(variable_key(*key), {"dag", "my__dag"}) == [TaskKey(*key)]


def test_a_current_record_name_of_a_dag_the_user_may_not_read_is_not_read() -> None:
    assert read_variable_name(variable_key("secret", "run", "task", -1), {"dag"}) == []
