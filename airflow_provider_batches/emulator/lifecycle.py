"""The batch lifecycle as pure rules over a batch record and a time, evaluated lazily on each access.

Rules (P = processing seconds, C = canceling seconds, both copied into the batch at create time):

* Requests finish one after another, evenly over P: by time t, ``floor(n * (t - created_at) / P)``
  are done. With P = 0 nothing is done until the batch is first read, and that read ends it.
* No cancel: the batch ends at ``created_at + P`` with every request at its planned outcome, unless
  that is after ``expires_at``: then it ends at ``expires_at`` and the unfinished requests are
  ``expired``.
* Cancel at time c (only while ``in_progress``): status ``canceling``; the batch ends at ``c + C``;
  the requests not finished by c are ``canceled``.
* Requests whose marker forces ``canceled`` or ``expired`` end that way whatever happens.
* ``archived_at = created_at + archive seconds``, shown once the batch has ended and that time passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_batches.emulator.answers import OUTCOME_CODES, OutcomeKind

COUNT_KEYS: tuple[OutcomeKind, ...] = ("succeeded", "errored", "canceled", "expired")
_CODE_KIND: dict[int, OutcomeKind] = {code[0]: kind for kind, code in OUTCOME_CODES.items()}
_FORCED = (OUTCOME_CODES["canceled"][0], OUTCOME_CODES["expired"][0])


@dataclass
class BatchRecord:
    """What the emulator keeps about a batch (persisted as JSON): no per-request data."""

    id: str
    seq: int
    owner: str
    request_count: int
    created_at: float
    expires_at: float
    archive_at: float
    processing_seconds: float
    canceling_seconds: float
    plan_seed: int
    errored_fraction: float
    errored_type: str
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    cutoff: int | None = None
    cutoff_outcome: OutcomeKind | None = None
    counts: dict[str, int] | None = None
    #: Models of this batch's requests that were not in the catalogue when it was created.
    unknown_models: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchRecord:
        return cls(**data)


@dataclass(frozen=True)
class EndPlan:
    """When the batch ends and how its unfinished requests (index >= cutoff) end."""

    ended_at: float
    cutoff: int
    cutoff_outcome: OutcomeKind


def finished_by(record: BatchRecord, moment: float) -> int:
    """How many requests (in submission order) have finished by ``moment``."""
    if record.processing_seconds <= 0:
        return 0
    elapsed = max(0.0, moment - record.created_at)
    done = math.floor(record.request_count * elapsed / record.processing_seconds)
    return min(record.request_count, done)


def end_plan(record: BatchRecord) -> EndPlan:
    """The end the batch is heading for, given what has happened so far (cancel or not)."""
    if record.cancel_initiated_at is not None:
        cancel_at = record.cancel_initiated_at
        return EndPlan(cancel_at + record.canceling_seconds, finished_by(record, cancel_at), "canceled")
    natural_end = record.created_at + record.processing_seconds
    if natural_end > record.expires_at:
        return EndPlan(record.expires_at, finished_by(record, record.expires_at), "expired")
    return EndPlan(natural_end, record.request_count, "succeeded")


def has_ended_by(record: BatchRecord, now: float) -> bool:
    return record.ended_at is not None or now >= end_plan(record).ended_at


def processing_status(record: BatchRecord) -> str:
    if record.ended_at is not None:
        return "ended"
    return "canceling" if record.cancel_initiated_at is not None else "in_progress"


def is_archived(record: BatchRecord, now: float) -> bool:
    return record.ended_at is not None and now >= record.archive_at


def final_outcome(planned_code: int, index: int, record: BatchRecord) -> OutcomeKind:
    """A request's result type once the batch has ended."""
    if planned_code in _FORCED or record.cutoff is None or index < record.cutoff:
        return _CODE_KIND[planned_code]
    assert record.cutoff_outcome is not None
    return record.cutoff_outcome


def final_counts(codes: bytes, cutoff: int, cutoff_outcome: OutcomeKind) -> dict[str, int]:
    """Counts at the end, from the planned-outcome codes: sums to len(codes) by construction."""
    counts: dict[str, int] = {key: 0 for key in COUNT_KEYS}
    head, tail = codes[:cutoff], codes[cutoff:]
    for kind, code in OUTCOME_CODES.items():
        counts[kind] += head.count(code)
    for forced in ("canceled", "expired"):
        counts[forced] += tail.count(OUTCOME_CODES[forced])
    unfinished = len(tail) - tail.count(OUTCOME_CODES["canceled"]) - tail.count(OUTCOME_CODES["expired"])
    counts[cutoff_outcome] += unfinished
    return counts


def request_counts(record: BatchRecord) -> dict[str, int]:
    """The API's request_counts: all ``processing`` until the end, then the final counts at once."""
    if record.counts is None:
        return {"processing": record.request_count, **{key: 0 for key in COUNT_KEYS}}
    return {"processing": 0, **record.counts}
