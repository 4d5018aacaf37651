"""The durable record of what a create task submitted, so that a retry re-attaches instead of paying twice.

One JSON record per task instance (all tries share it): the job's rounds, each alike (round 1 sends
the whole input, each later round what the round before sent again), with its fingerprint and, for
each batch of its split, the intent to create it (written *before* the paid call, with the watermark
that bounds the search for a lost answer's batch), its id (written right after the call returns), the
digest of its custom_ids and, once it ended, its counts; and whether the job finished, so that a retry
after success returns the same manifest without any call. Where it is kept:

* ``task_state_store`` (Airflow 3.3+): durable, scoped to the task instance, shared by its tries,
  kept for :data:`RECORD_RETENTION` (a batch's whole life: 24 h processing + 29 days of results).
* fallback on Airflows without it: an Airflow Variable named after the task instance. Weaker: the
  name is global, Airflow does not clean it up (it carries its own expiry, after which it is
  ignored), and anyone with Variable access can change it.
* no task instance at all (an ``execute()`` call outside Airflow): in memory, with a warning; a retry
  then cannot re-attach.

A *clear* of the task is told from a *retry* by the task instance's ``max_tries``, which Airflow
raises on every clear and leaves alone on a retry: the record keeps the value of the try that
started the job (its ``generation``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol, get_args

from airflow_provider_batches.errors import JobRecordError
from airflow_provider_batches.requests import PreparedJob

log = logging.getLogger(__name__)

#: The task_state_store key. Renaming it breaks re-attaching for tries already in flight.
RECORD_KEY = "anthropic_batch_job"
RECORD_VERSION = 4
#: Versions this code reads: 1 lacks watermarks and custom_id digests, 2 lacks follow-up rounds, 3
#: keeps round 1 apart (the input's fingerprint, ``slices``, ``ended_counts`` and ``redriven`` at the
#: top, the later rounds in ``rounds``); 4 keeps every round in ``rounds``, round 1 first.
READABLE_VERSIONS = (1, 2, 3, 4)
#: What a round sends: the whole input (round 1), what the re-drive policy selects from the round
#: before (counted by ``Redrive.max_rounds``), or the unfinished requests of canceled batches.
RoundKind = Literal["first", "redrive", "resume"]
#: A batch processes for up to 24 h and its results stay 29 days: the record outlives both.
RECORD_RETENTION = timedelta(days=31)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class SliceRecord:
    """One batch of the job: its size and digests, the intent to create it, and its id once created."""

    count: int
    sha256: str
    ids_digest: str = ""
    intent_at: str | None = None
    #: The newest batch listed just before the paid create (see ``client_core.CreateWatermark``).
    watermark: dict[str, Any] | None = None
    batch_id: str | None = None
    #: Batches made for this slice earlier and then canceled (by a timeout, a kill or a person).
    replaced: list[str] = field(default_factory=list)
    #: The batch's final counts once it ended: a job submitted in waves (``max_requests_in_flight``)
    #: waits for some batches while later slices are not created yet.
    ended_counts: dict[str, int] | None = None
    #: The custom_id of the proof request the create carries (:mod:`~airflow_provider_batches.proof`),
    #: recorded with the intent, before the paid call; None in records of earlier versions.
    proof_id: str | None = None
    #: How the proof request ended (its result is not the user's: counts leave it out).
    proof_kind: str | None = None
    #: After a lost create: the newest batch listed by the first search that followed it. Later
    #: searches never look past it, so the window of candidates never widens.
    search_until: dict[str, Any] | None = None
    #: The batches that may be the lost create's, none proven: never waited on as the job's, never
    #: canceled, never adopted until their results carry ``proof_id``.
    candidates: list[str] = field(default_factory=list)
    #: Candidates that ended without ``proof_id`` in their results: not this job's, not read again.
    disproven: list[str] = field(default_factory=list)
    #: First round: where the batch's lines start in the input (byte offset, or inline index) and on
    #: which line, so that a follow-up round reads only the batches that hold its requests (their
    #: lines end where the next batch's start). None in records of earlier versions.
    offset: int | None = None
    first_line: int | None = None
    #: A follow-up round's batch: the first round's batches (by index) its requests were read from.
    origins: list[int] | None = None

    @property
    def intent_time(self) -> datetime | None:
        return datetime.fromisoformat(self.intent_at) if self.intent_at else None


@dataclass
class RoundRecord:
    """One round of the job: the whole input (round 1), or requests of the round before sent again.

    Recorded (with its fingerprint and split) *before* any of its creates, so a retry recomputes the
    same round (from the input, or the earlier round's results) and re-attaches instead of submitting
    it twice. Its slices may be created in waves (``max_requests_in_flight``, a full queue); it has
    ended once every slice's batch has.
    """

    number: int
    fingerprint: str
    request_count: int
    slices: list[SliceRecord]
    #: Not submitted before this time (``Redrive.delay`` after the earlier round ended).
    not_before: str | None = None
    ended_counts: dict[str, dict[str, int]] | None = None
    #: Per result type, how many of this round's results were sent again in the next round.
    redriven: dict[str, int] | None = None
    #: ``first``: the whole input; ``redrive``: counted by ``Redrive.max_rounds``; ``resume``: only the
    #: unfinished requests of canceled batches, sent again (not counted: each follows a cancel).
    kind: RoundKind = "redrive"
    #: Canceled batches of the round before whose unfinished requests this round sends again.
    resumed_batches: list[str] = field(default_factory=list)

    @classmethod
    def for_job(
        cls,
        job: PreparedJob,
        number: int,
        *,
        not_before: str | None = None,
        kind: RoundKind = "redrive",
        resumed_batches: Sequence[str] = (),
    ) -> RoundRecord:
        return cls(
            number,
            job.fingerprint,
            job.request_count,
            _slices_of(job, first_round=kind == "first"),
            not_before,
            kind=kind,
            resumed_batches=list(resumed_batches),
        )

    @property
    def batch_ids(self) -> list[str]:
        return [part.batch_id for part in self.slices if part.batch_id]

    @property
    def waiting_batch_ids(self) -> list[str]:
        """The round's batches created and not yet ended: what the next wait is for."""
        return [part.batch_id for part in self.slices if part.batch_id and part.ended_counts is None]

    @property
    def unsubmitted(self) -> int:
        """How many slices have no batch yet (held back by ``max_requests_in_flight`` or a full queue)."""
        return sum(1 for part in self.slices if part.batch_id is None)

    def record_ended(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """The final counts of some of the round's batches; once every slice's batch has ended, the
        round has ended (``ended_counts``)."""
        for part in self.slices:
            if part.batch_id is not None and part.batch_id in counts:
                part.ended_counts = dict(counts[part.batch_id])
        ended = {
            part.batch_id: part.ended_counts
            for part in self.slices
            if part.batch_id and part.ended_counts is not None
        }
        if len(ended) == len(self.slices):
            self.ended_counts = {batch_id: dict(batch_counts) for batch_id, batch_counts in ended.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundRecord:
        round_record = cls(**{**data, "slices": [SliceRecord(**part) for part in data["slices"]]})
        if round_record.kind not in get_args(RoundKind):
            raise ValueError(f"round {round_record.number}: unknown kind {round_record.kind!r}")
        # A round that ended has every slice ended: records of versions before ``SliceRecord.ended_counts``
        # kept the counts per round only, and a retry must not take their slices for batches in flight.
        for part in round_record.slices:
            ended = (round_record.ended_counts or {}).get(part.batch_id or "")
            if part.ended_counts is None and ended is not None:
                part.ended_counts = dict(ended)
        return round_record


def _slices_of(job: PreparedJob, *, first_round: bool) -> list[SliceRecord]:
    """The record of each batch: in the first round where its lines are, in a later one which batches
    of the first round its requests came from."""
    return [
        SliceRecord(
            count=part.count,
            sha256=part.sha256,
            ids_digest=part.ids_digest,
            offset=part.offset if first_round else None,
            first_line=part.first_line if first_round else None,
            origins=list(part.origins) if part.origins and not first_round else None,
        )
        for part in job.slices
    ]


@dataclass
class JobRecord:
    """What a create task has submitted for one input; ``finished`` once a try completed the job."""

    #: Every round of the job in order, round 1 (the whole input) first; never empty.
    rounds: list[RoundRecord]
    #: ``max_tries`` of the task instance when the job started: a clear raises it.
    generation: int | None = None
    finished: bool = False
    expires_at: str | None = None
    version: int = RECORD_VERSION
    #: The re-drive policy (``Redrive.to_json``) the job runs with; None: no re-drive.
    redrive: dict[str, Any] | None = None
    #: When a create was first refused because the processing queue was full, with none of the
    #: job's batches in flight (reset by the next create): how long the job has waited for room.
    queue_full_since: str | None = None
    #: The job's own cancels, by batch id: why and when, written *before* the cancel call. A canceled
    #: batch not in here was canceled by someone else, which a retry does not override by default.
    own_cancels: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def for_job(cls, job: PreparedJob, *, generation: int | None = None) -> JobRecord:
        return cls(rounds=[RoundRecord.for_job(job, 1, kind="first")], generation=generation)

    @property
    def fingerprint(self) -> str:
        """The input's fingerprint: round 1 sends the whole input."""
        return self.rounds[0].fingerprint

    @property
    def request_count(self) -> int:
        return self.rounds[0].request_count

    @property
    def current(self) -> RoundRecord:
        """The round in flight (or the last one, once ended)."""
        return self.rounds[-1]

    def round(self, number: int) -> RoundRecord:
        return self.rounds[number - 1]

    def matches(self, job: PreparedJob) -> bool:
        """Same input, split the same way: the batches on record are this job's."""
        return self.fingerprint == job.fingerprint and [s.sha256 for s in self.rounds[0].slices] == [
            part.sha256 for part in job.slices
        ]

    @property
    def all_batch_ids(self) -> list[str]:
        """The batches of every round, first round first."""
        return [batch_id for each in self.rounds for batch_id in each.batch_ids]

    @property
    def all_slices(self) -> list[SliceRecord]:
        """The slices of every round, first round first."""
        return [part for each in self.rounds for part in each.slices]

    @property
    def proof_pending(self) -> bool:
        """Whether a lost create still waits for its candidates to end (none of them is the job's)."""
        return any(part.candidates and not part.batch_id for part in self.all_slices)

    @property
    def known_batch_ids(self) -> list[str]:
        """Every batch this job ever made, in every round, replaced ones included: never another
        slice's batch (the ``exclude`` of every lost-create search)."""
        return [*self.all_batch_ids, *(old for part in self.all_slices for old in part.replaced)]

    def batches(self) -> dict[str, dict[str, Any]]:
        """Per batch of every round: its request count, custom_id digest and the custom_id of its proof
        request (the results transfer checks the first two and strips the proof's line)."""
        return {
            part.batch_id: {
                "request_count": part.count,
                "custom_ids_digest": part.ids_digest,
                **({"proof_custom_id": part.proof_id} if part.proof_id else {}),
            }
            for part in self.all_slices
            if part.batch_id
        }

    def note_cancels(self, batch_ids: Sequence[str], reason: str) -> None:
        """Record that the job itself cancels these batches (save before the cancel call)."""
        for batch_id in batch_ids:
            self.own_cancels.setdefault(batch_id, {"reason": reason, "at": utcnow().isoformat()})

    def check_consistent(self) -> None:
        """Refuse a record that names one batch twice: waiting on it could never complete."""
        seen: set[str] = set()
        for batch_id in self.known_batch_ids:
            if batch_id in seen:
                raise JobRecordError(
                    f"the task's batch record names batch {batch_id} for two parts of the job; it is "
                    "inconsistent and nothing more is sent or waited on. Check the batches in the "
                    f"Anthropic console, then delete the task's '{RECORD_KEY}' state (or clear the task) "
                    "to submit afresh."
                )
            seen.add(batch_id)

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(self.expires_at) < now

    def to_json(self) -> dict[str, Any]:
        """The record as stored, stamped with its expiry (the Variable fallback has no retention)."""
        self.expires_at = (utcnow() + RECORD_RETENTION).isoformat()
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> JobRecord | None:
        """The record; None when nothing is stored; :class:`JobRecordError` when it is unreadable."""
        if data is None:
            return None
        if not isinstance(data, Mapping) or data.get("version") not in READABLE_VERSIONS:
            raise _unreadable(data)
        try:
            rounds = [RoundRecord.from_json(entry) for entry in stored_rounds(data)]
            if [each.number for each in rounds] != list(range(1, len(rounds) + 1)) or rounds[
                0
            ].kind != "first":
                raise ValueError("the rounds are not numbered 1, 2, ... from the first")
            record = cls(
                rounds=rounds,
                generation=data.get("generation"),
                finished=bool(data.get("finished", False)),
                expires_at=data.get("expires_at"),
                redrive=data.get("redrive"),
                queue_full_since=data.get("queue_full_since"),
                own_cancels=dict(data.get("own_cancels") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _unreadable(data) from exc
        record.check_consistent()
        return record


def stored_rounds(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rounds of a stored record as version 4 keeps them: versions 1 to 3 kept round 1 (the whole
    input) at the top of the record and only the later rounds in ``rounds``."""
    if data["version"] >= 4:
        return list(data["rounds"])
    first = {
        "number": 1,
        "kind": "first",
        "fingerprint": str(data["fingerprint"]),
        "request_count": int(data["request_count"]),
        "slices": data["slices"],
        "ended_counts": data.get("ended_counts"),
        "redriven": data.get("redriven"),
    }
    return [first, *data.get("rounds", [])]


def _unreadable(data: Any) -> JobRecordError:
    shown = repr(data)
    return JobRecordError(
        f"the task's batch record is unreadable ({shown[:200]}); nothing is sent on a guess, since an "
        "earlier try may have created billed batches. Check the Anthropic console, then delete the "
        f"task's '{RECORD_KEY}' state (or clear the task) to submit afresh."
    )


class JobStore(Protocol):
    """Where the record lives; ``durable`` says whether a later try will see it."""

    durable: bool
    description: str

    def load(self) -> JobRecord | None: ...

    def save(self, record: JobRecord) -> None: ...


class TaskStateJobStore:
    """Airflow 3.3+ ``task_state_store``: durable, per task instance, shared by its tries."""

    durable = True
    description = "task_state_store"

    def __init__(self, accessor: Any) -> None:
        self._accessor = accessor

    def load(self) -> JobRecord | None:
        return JobRecord.from_json(self._accessor.get(RECORD_KEY))

    def save(self, record: JobRecord) -> None:
        self._accessor.set(RECORD_KEY, record.to_json(), retention=RECORD_RETENTION)


#: Airflow's Variable keys are at most 250 characters (``ID_LEN``).
VARIABLE_KEY_LIMIT = 250
#: Hex digits of the task instance's digest in the Variable name: 64 bits, so two task instances
#: share a name only if their readable parts agree *and* their digests collide.
_KEY_DIGEST_HEX = 16


def variable_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The Variable that holds one task instance's record (Airflow 3.1-3.2).

    Readable (the task instance's names, cut to fit Airflow's 250-character keys) and unambiguous: the
    digest of the exact tuple comes first, so DAG ``etl`` run ``scheduled__2026-12-01`` and DAG
    ``etl__scheduled`` run ``2026-12-01`` (one readable part) get two names.
    """
    identity = json.dumps([dag_id, run_id, task_id, map_index], separators=(",", ":"))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:_KEY_DIGEST_HEX]
    key = f"{RECORD_KEY}__{digest}__{dag_id}__{run_id}__{task_id}__{map_index}"
    return key[:VARIABLE_KEY_LIMIT]


def legacy_variable_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The name versions up to 0.x used: ambiguous when a name holds ``__`` (see :func:`legacy_owners`)."""
    return f"{RECORD_KEY}__{dag_id}__{run_id}__{task_id}__{map_index}"


def legacy_owners(dag_id: str, run_id: str, task_id: str, map_index: int) -> list[tuple[str, str, str]]:
    """Every other ``(dag_id, run_id, task_id)`` whose legacy name is this task instance's: the ways of
    cutting ``<dag>__<run>__<task>`` at ``__`` other than this one. Empty: the legacy name is this task
    instance's alone, and its record can be read as this task instance's."""
    text = f"{dag_id}__{run_id}__{task_id}"
    cuts = [at for at in range(len(text) - 1) if text.startswith("__", at)]
    owners = []
    for first in cuts:
        for second in cuts:
            if second < first + 2:
                continue
            owner = (text[:first], text[first + 2 : second], text[second + 2 :])
            if all(owner) and owner != (dag_id, run_id, task_id):
                owners.append(owner)
    return owners


class VariableJobStore:
    """Fallback for Airflows without ``task_state_store``: a Variable named after the task instance
    (:func:`variable_key`).

    Kept after success (a retry then returns the same manifest); ignored once expired. A record that
    earlier versions kept under the legacy name is still read when that name is this task instance's
    alone; when other task instances could share it, the task fails naming them rather than guess.
    """

    durable = True
    description = "Airflow Variable (fallback)"

    def __init__(self, ti: Any, variables: Any = None) -> None:
        identity = (ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        self.key = variable_key(*identity)
        self.legacy_key = legacy_variable_key(*identity)
        self._identity = identity
        self._variables = variables

    @property
    def variables(self) -> Any:
        if self._variables is None:
            from airflow.sdk import Variable

            self._variables = Variable
        return self._variables

    def load(self) -> JobRecord | None:
        stored = self.variables.get(self.key, default=None, deserialize_json=True)
        key = self.key
        if stored is None:
            stored = self._legacy()
            key = self.legacy_key
        record = JobRecord.from_json(stored)
        if record is not None and record.is_expired(utcnow()):
            log.info("The batch job record %s has expired: ignoring it", key)
            return None
        return record

    def _legacy(self) -> Any:
        """The record under the legacy name, if it is provably this task instance's."""
        stored = self.variables.get(self.legacy_key, default=None, deserialize_json=True)
        if stored is None:
            return None
        owners = legacy_owners(*self._identity)
        if owners:
            named = "; ".join(f"DAG {d!r} run {r!r} task {t!r}" for d, r, t in owners[:5])
            try:
                rounds = stored_rounds(stored)
            except (KeyError, TypeError, ValueError):
                rounds = []
            ids = [
                part.get("batch_id")
                for each in rounds
                if isinstance(each, Mapping)
                for part in each.get("slices") or ()
                if isinstance(part, Mapping)
            ]
            raise JobRecordError(
                f"a batch job record is kept under the ambiguous name {self.legacy_key!r} (written by an "
                f"earlier provider version), which is also the earlier name of {named}: it may be another "
                "task instance's, so nothing is sent or waited on. Its batches: "
                f"{', '.join(i for i in ids if i) or 'none'}. If this task instance submitted them (see its "
                f"log), rename the Variable to {self.key!r} and retry; if another did, delete it once that "
                "task instance has finished (its own next try keeps its record under its new name)."
            )
        log.info("Reading the batch job record kept under its earlier name %s", self.legacy_key)
        return stored

    def save(self, record: JobRecord) -> None:
        self.variables.set(self.key, record.to_json(), serialize_json=True)


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


def generation_of(context: Mapping[str, Any]) -> int | None:
    """The task instance's ``max_tries``: unchanged by a retry, raised by every clear."""
    value = getattr(context.get("ti"), "max_tries", None)
    return value if isinstance(value, int) else None
