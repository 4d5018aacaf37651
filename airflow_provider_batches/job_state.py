"""The durable record of what a create task submitted, so that a retry re-attaches instead of paying twice.

One JSON record per task instance (all tries share it): the input's fingerprint, and for each batch
of the split job the intent to create it (written *before* the paid call) and its id (written right
after the call returns). Where it is kept:

* ``task_state_store`` (Airflow 3.3+): durable, scoped to the task instance, shared by its tries.
* fallback on Airflows without it: an Airflow Variable named after the task instance. Weaker: the
  name is global, Airflow does not clean it up (the operator deletes it when the job is done), and
  anyone with Variable access can change it.
* no task instance at all (an ``execute()`` call outside Airflow): in memory, with a warning; a retry
  then cannot re-attach.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from airflow_provider_batches.requests import PreparedJob

log = logging.getLogger(__name__)

#: The task_state_store key. Renaming it breaks re-attaching for tries already in flight.
RECORD_KEY = "anthropic_batch_job"
RECORD_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class SliceRecord:
    """One batch of the job: its size and digest, the intent to create it, and its id once created."""

    count: int
    sha256: str
    intent_at: str | None = None
    batch_id: str | None = None

    @property
    def intent_time(self) -> datetime | None:
        return datetime.fromisoformat(self.intent_at) if self.intent_at else None


@dataclass
class JobRecord:
    """What a create task has submitted for one input; ``finished`` once a try completed the job."""

    fingerprint: str
    request_count: int
    slices: list[SliceRecord]
    finished: bool = False
    version: int = RECORD_VERSION

    @classmethod
    def for_job(cls, job: PreparedJob) -> JobRecord:
        slices = [SliceRecord(count=part.count, sha256=part.sha256) for part in job.slices]
        return cls(fingerprint=job.fingerprint, request_count=job.request_count, slices=slices)

    def matches(self, job: PreparedJob) -> bool:
        """Same input, split the same way: the batches on record are this job's."""
        return self.fingerprint == job.fingerprint and [s.sha256 for s in self.slices] == [
            part.sha256 for part in job.slices
        ]

    @property
    def batch_ids(self) -> list[str]:
        return [part.batch_id for part in self.slices if part.batch_id]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> JobRecord | None:
        """The record, or None (with a warning) when what is stored is not one this version reads."""
        if not isinstance(data, Mapping) or data.get("version") != RECORD_VERSION:
            if data is not None:
                log.warning("Ignoring an unreadable batch job record: %r", data)
            return None
        try:
            slices = [SliceRecord(**part) for part in data["slices"]]
            return cls(
                fingerprint=str(data["fingerprint"]),
                request_count=int(data["request_count"]),
                slices=slices,
                finished=bool(data.get("finished", False)),
            )
        except (KeyError, TypeError, ValueError):
            log.warning("Ignoring an unreadable batch job record: %r", data)
            return None


class JobStore(Protocol):
    """Where the record lives; ``durable`` says whether a later try will see it."""

    durable: bool
    description: str

    def load(self) -> JobRecord | None: ...

    def save(self, record: JobRecord) -> None: ...

    def finish(self, record: JobRecord) -> None:
        """The job is done: a later try (a cleared task) submits afresh instead of re-attaching."""


class TaskStateJobStore:
    """Airflow 3.3+ ``task_state_store``: durable, per task instance, shared by its tries."""

    durable = True
    description = "task_state_store"

    def __init__(self, accessor: Any) -> None:
        self._accessor = accessor

    def load(self) -> JobRecord | None:
        return JobRecord.from_json(self._accessor.get(RECORD_KEY))

    def save(self, record: JobRecord) -> None:
        self._accessor.set(RECORD_KEY, record.to_json())

    def finish(self, record: JobRecord) -> None:
        """Kept, marked finished: it stays visible in the UI, and a cleared task still submits afresh."""
        record.finished = True
        self.save(record)


class VariableJobStore:
    """Fallback for Airflows without ``task_state_store``: a Variable named after the task instance."""

    durable = True
    description = "Airflow Variable (fallback)"

    def __init__(self, ti: Any) -> None:
        map_index = getattr(ti, "map_index", -1)
        self.key = f"{RECORD_KEY}__{ti.dag_id}__{ti.run_id}__{ti.task_id}__{map_index}"

    def load(self) -> JobRecord | None:
        from airflow.sdk import Variable

        return JobRecord.from_json(Variable.get(self.key, default=None, deserialize_json=True))

    def save(self, record: JobRecord) -> None:
        from airflow.sdk import Variable

        Variable.set(self.key, record.to_json(), serialize_json=True)

    def finish(self, record: JobRecord) -> None:
        """Deleted: Airflow would never clean the Variable up."""
        from airflow.sdk import Variable

        Variable.delete(self.key)


class MemoryJobStore:
    """No task instance to key on: the record lives only as long as this object."""

    durable = False
    description = "memory (not durable)"

    def __init__(self) -> None:
        self.record: JobRecord | None = None

    def load(self) -> JobRecord | None:
        return self.record

    def save(self, record: JobRecord) -> None:
        self.record = JobRecord.from_json(record.to_json())

    def finish(self, record: JobRecord) -> None:
        self.record = None


def job_store_for(context: Mapping[str, Any]) -> JobStore:
    """The most durable store this Airflow offers the running task."""
    accessor = context.get("task_state_store")
    if accessor is not None:
        return TaskStateJobStore(accessor)
    ti = context.get("ti")
    if ti is not None and getattr(ti, "run_id", None):
        log.warning(
            "task_state_store is not available (Airflow < 3.3): recording submitted batches in an "
            "Airflow Variable instead"
        )
        return VariableJobStore(ti)
    log.warning("No task instance in the context: submitted batches are not recorded durably")
    return MemoryJobStore()
