"""What the Batches view shows of one job, and spend over time: built from stored data only, no I/O.

A *job* is one create task instance's durable record (:mod:`~airflow_provider_batches.job_state`)
plus the small manifests the provider's operators already return through XCom: the create
operator's (final counts), the results transfer's (where results landed, what they actually cost,
the pre-flight estimate it was given) and the token-count operator's (the estimate). Nothing here
reads a request, a result, a connection or a key; the functions take plain data and return plain
JSON, so the page and the tests see exactly the same thing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from airflow_provider_batches.errors import JobRecordError
from airflow_provider_batches.job_state import JobRecord, RoundRecord, SliceRecord
from airflow_provider_batches.links import console_url
from airflow_provider_batches.models import COUNT_FIELDS
from airflow_provider_batches.operators.rounds import final_counts

#: Slices of one round created further apart than this are counted as separate waves (a wave waits
#: for earlier batches to end, minutes at least; the creates of one wave follow each other in seconds).
WAVE_GAP = timedelta(seconds=60)


@dataclass(frozen=True)
class TaskKey:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
        }


@dataclass
class JobSource:
    """Everything stored about one create task instance, as read from Airflow's database."""

    key: TaskKey
    record: Any  # the record as stored (JSON), or None when only the manifest is left
    store: str  # where the record was read from
    ti_state: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    try_number: int | None = None
    operator: str | None = None
    create_manifest: Mapping[str, Any] | None = None
    #: Results transfers' and token counts' manifests of the same DAG run (matched to the job here).
    transfer_manifests: list[Mapping[str, Any]] = field(default_factory=list)
    estimates: list[Mapping[str, Any]] = field(default_factory=list)


def task_instance_path(key: TaskKey) -> str:
    """The task instance's page in the Airflow UI, relative to the UI's base URL."""
    dag, run, task = (quote(part, safe="") for part in (key.dag_id, key.run_id, key.task_id))
    path = f"dags/{dag}/runs/{run}/tasks/{task}"
    return f"{path}/mapped/{key.map_index}" if key.map_index >= 0 else path


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _counts(value: Mapping[str, Any] | None) -> dict[str, int] | None:
    if value is None:
        return None
    return {name: int(value.get(name) or 0) for name in COUNT_FIELDS}


def _waves(slices: Sequence[SliceRecord]) -> list[int]:
    """The wave of each slice (1-based; 0 while not created), inferred from its create time."""
    waves: list[int] = []
    wave = 0
    last: datetime | None = None
    for part in slices:
        when = part.intent_time
        if part.batch_id is None or when is None:
            waves.append(0)
            continue
        if last is None or when - last > WAVE_GAP:
            wave += 1
        last = when
        waves.append(wave)
    return waves


def _round(each: RoundRecord) -> dict[str, Any]:
    slices = each.slices
    batches: list[dict[str, Any]] = []
    for part, wave in zip(slices, _waves(slices), strict=True):
        counts = _counts(part.ended_counts)
        batches.append(
            {
                "batch_id": part.batch_id,
                "request_count": part.count,
                "wave": wave,
                "created_at": part.intent_at if part.batch_id else None,
                "ended": part.ended_counts is not None,
                # Not ended yet: all of it is still processing, as far as the stored record knows.
                "counts": counts or {**dict.fromkeys(COUNT_FIELDS, 0), "processing": part.count},
                "replaced": list(part.replaced),
                "console_url": console_url([part.batch_id]) if part.batch_id else None,
            }
        )
    totals = {name: sum(batch["counts"][name] for batch in batches) for name in COUNT_FIELDS}
    return {
        "number": each.number,
        "kind": each.kind,
        "request_count": sum(part.count for part in slices),
        "batches": batches,
        "waves": max((batch["wave"] for batch in batches), default=0),
        "held_back": sum(1 for part in slices if part.batch_id is None),
        "counts": totals,
        "redriven": dict(each.redriven or {}),
    }


def _matching_transfer(
    batch_ids: Iterable[str], manifests: Iterable[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The results transfer of this job: the newest manifest that names one of its batches."""
    ours = set(batch_ids)
    found = [m for m in manifests if ours & set(m.get("batch_ids") or [])]
    return max(found, key=lambda m: str(m.get("written_at") or ""), default=None)


def _estimate(
    transfer: Mapping[str, Any] | None, estimates: Sequence[Mapping[str, Any]], request_count: int
) -> float | None:
    """The pre-flight estimate (upper bound, USD): the one the transfer reported beside the actual
    cost, else the run's token count of the same number of requests."""
    spend = (transfer or {}).get("spend") or {}
    if isinstance(spend.get("estimated_cost_usd"), (int, float)):
        return float(spend["estimated_cost_usd"])
    for summary in estimates:
        if summary.get("request_count") == request_count:
            total = (summary.get("estimated_cost_usd") or {}).get("total_max")
            if isinstance(total, (int, float)):
                return float(total)
    return None


def _error_types(record: JobRecord, create_manifest: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The job's failures by type: the final ones first, then those re-driven to a later round.

    The final failures come from the create manifest's summary read from the results (``errors.types``:
    type, count, an example message, rounds), when it has one; the re-driven ones from the record,
    which counts them per result type only (``errored``, ``expired``).
    """
    summary = (create_manifest or {}).get("errors")
    entries = summary.get("types") if isinstance(summary, Mapping) else None
    final: list[dict[str, Any]] = [
        {
            "type": str(entry.get("type")),
            "count": int(entry.get("count") or 0),
            "source": "results",
            "example": str(entry.get("example") or ""),
            "rounds": [int(number) for number in entry.get("rounds") or []],
        }
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, Mapping)
    ]
    tally: Counter[str] = Counter()
    for each in record.rounds:
        tally.update(each.redriven or {})
    redriven: list[dict[str, Any]] = [
        {"type": kind, "count": count, "source": "re-driven", "example": "", "rounds": []}
        for kind, count in sorted(tally.items(), key=lambda item: (-item[1], item[0]))
        if count
    ]
    return [*final, *redriven]


def build_job(source: JobSource) -> dict[str, Any]:
    """The view of one job: identity, state, rounds and waves with per-batch counts, costs, links."""
    view: dict[str, Any] = {
        **source.key.to_json(),
        "task_instance_url": task_instance_path(source.key),
        "ti_state": source.ti_state,
        "try_number": source.try_number,
        "operator": source.operator,
        "store": source.store,
        "started_at": _iso(source.start_date),
        "ended_at": _iso(source.end_date),
    }
    try:
        record = JobRecord.from_json(source.record)
    except JobRecordError as exc:
        return {**view, "state": "unreadable", "problem": str(exc), "rounds": [], "batch_ids": []}
    if record is None:
        return {**view, "state": "no record", "rounds": [], "batch_ids": []}
    rounds = [_round(each) for each in record.rounds]
    final = final_counts(record)
    if final is None and source.create_manifest:
        final = _counts(source.create_manifest.get("request_counts"))
    transfer = _matching_transfer(record.all_batch_ids, source.transfer_manifests)
    spend = (transfer or {}).get("spend") or {}
    created = [b["created_at"] for r in rounds for b in r["batches"] if b["created_at"]]
    waiting = any(not b["ended"] for r in rounds for b in r["batches"])
    state = "finished" if record.finished else ("processing" if waiting or not created else "ended")
    return {
        **view,
        "state": state,
        "request_count": record.request_count,
        "batch_ids": record.all_batch_ids,
        "rounds": rounds,
        "waves": max(r["waves"] for r in rounds),
        "counts": {name: (final or {}).get(name, 0) for name in COUNT_FIELDS} if final else None,
        "created_at": min(created) if created else None,
        "estimated_cost_usd": _estimate(transfer, source.estimates, record.request_count),
        "actual_cost_usd": spend.get("cost_usd"),
        "cost_complete": spend.get("complete"),
        "unpriced_models": list(spend.get("unpriced_models") or []),
        "results": _results(transfer),
        "console_url": console_url(record.all_batch_ids),
        "error_types": _error_types(record, source.create_manifest),
    }


def _results(transfer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if transfer is None:
        return None
    return {
        "destination": transfer.get("destination"),
        "written_at": transfer.get("written_at"),
        "format": transfer.get("output_format"),
        "files": [
            {"uri": entry.get("uri"), "results": entry.get("results"), "bytes": entry.get("bytes")}
            for entry in transfer.get("files") or []
            if isinstance(entry, Mapping)
        ],
    }


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            return None
    return None


def spend_by_day(jobs: Iterable[Mapping[str, Any]], *, today: date, days: int) -> dict[str, Any]:
    """Actual and estimated spend per day and DAG over the last ``days`` days (today included).

    A job counts on the day its results were written (actual) or, without results yet, the day it
    was created (estimate only). Jobs older than the window are left out.
    """
    first = today - timedelta(days=days - 1)
    dags: set[str] = set()
    actual: dict[str, dict[str, float]] = {}
    estimated: dict[str, dict[str, float]] = {}
    for job in jobs:
        when = _day((job.get("results") or {}).get("written_at")) or _day(job.get("created_at"))
        if when is None or not first <= when <= today:
            continue
        dag, day = str(job["dag_id"]), when.isoformat()
        for into, value in ((actual, job.get("actual_cost_usd")), (estimated, job.get("estimated_cost_usd"))):
            if isinstance(value, (int, float)):
                dags.add(dag)
                per_dag = into.setdefault(day, {})
                per_dag[dag] = round(per_dag.get(dag, 0.0) + float(value), 6)
    return {
        "days": [(first + timedelta(days=offset)).isoformat() for offset in range(days)],
        "dags": sorted(dags),
        "actual": actual,
        "estimated": estimated,
        "total_actual_usd": round(sum(v for d in actual.values() for v in d.values()), 6),
        "total_estimated_usd": round(sum(v for d in estimated.values() for v in d.values()), 6),
    }
