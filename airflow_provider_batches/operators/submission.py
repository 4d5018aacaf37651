"""The create operator's retry-safe submission: which batches a try must create, re-attach or adopt.

A small state machine over the task's durable :class:`~airflow_provider_batches.job_state.JobRecord`,
kept apart from the operator so that every path (re-attach, adopt a lost create's batch, changed
input, clear versus retry) is tested by injecting the paid call instead of overriding private
methods. It never sends a create without first recording the intent, the watermark and the create's
proof request id, and never records a batch that another part of the job already owns.

A lost create is settled by proof (:mod:`~airflow_provider_batches.proof`): the listing names the
candidates (same size, made since the watermark, and no later than the first search after the loss);
one is adopted only once its results carry the create's proof id. Until then nothing is adopted,
created again or canceled: :class:`ProofPending` asks the operator to wait for the candidates to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from airflow_provider_batches.client_core import CreateWatermark
from airflow_provider_batches.errors import (
    BatchCreateUncertainError,
    BatchWaitError,
    CreateAnswerLostError,
    InputChangedError,
    InvalidRequestError,
    JobRecordError,
    NotFoundError,
    RateLimitError,
)
from airflow_provider_batches.job_state import (
    RECORD_KEY,
    JobRecord,
    JobStore,
    RoundRecord,
    SliceRecord,
    utcnow,
)
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.operators.rounds import OnExternalCancel, check_cancel_resumable
from airflow_provider_batches.proof import PROOF_RESERVED_REQUESTS, new_proof_id, read_proof
from airflow_provider_batches.requests import BatchSlice, PreparedJob
from airflow_provider_batches.waiting import NOT_FOUND_GRACE_SECONDS

if TYPE_CHECKING:
    from logging import Logger

    from airflow_provider_batches.hooks.anthropic import AnthropicHook

OnInputChange = Literal["fail", "cancel_and_resubmit"]
ON_INPUT_CHANGE_CHOICES: tuple[str, ...] = ("fail", "cancel_and_resubmit")

OnUncertainCreate = Literal["wait_for_proof", "fail"]
ON_UNCERTAIN_CREATE_CHOICES: tuple[str, ...] = ("wait_for_proof", "fail")

#: Seconds between a lost create and the search for its candidates: a new batch can take a moment to
#: be listed. The first search after a loss also bounds every later one (``SliceRecord.search_until``).
LISTING_LAG_SECONDS = 2.0
#: Creates sent for one part within one try when each answer is lost and no candidate is listed.
MAX_CREATES_PER_TRY = 3

#: The paid call: create one batch of the job, given the watermark, the batches to exclude and the
#: create's proof request id (a lost answer raises ``CreateAnswerLostError``, nothing adopted).
CreateCall = Callable[[BatchSlice, CreateWatermark, Sequence[str], str], MessageBatch]


class ProofPending(Exception):
    """Not an error: a lost create's candidates have not ended, so whether one is this job's cannot be
    proven yet. The operator waits for ``batch_ids`` to end (deferred: no worker slot), acting on none
    of them, then submits again; the record keeps the intent, its proof id and the candidates."""

    def __init__(self, batch_ids: Sequence[str], part: int) -> None:
        self.batch_ids = list(batch_ids)
        self.part = part
        super().__init__(
            f"part {part + 1}: waiting for batches {', '.join(self.batch_ids)} to end, to prove from their "
            "results whether one is this job's lost create"
        )


#: Best-effort cancel of batches, with the reason logged.
CancelCall = Callable[[Sequence[str], str], None]


class JobSubmission:
    """Brings the task's record and the API in line with ``job``, paying only for what is missing."""

    def __init__(
        self,
        hook: AnthropicHook,
        store: JobStore,
        job: PreparedJob,
        *,
        log: Logger,
        cancel: CancelCall,
        generation: int | None = None,
        on_input_change: OnInputChange = "fail",
        create: CreateCall | None = None,
        max_requests_in_flight: int | None = None,
        on_external_cancel: OnExternalCancel = "fail",
        on_uncertain_create: OnUncertainCreate = "wait_for_proof",
        sleep: Callable[[float], None] = time.sleep,
        before_first_create: Callable[[], None] | None = None,
    ) -> None:
        if on_uncertain_create not in ON_UNCERTAIN_CREATE_CHOICES:
            raise ValueError(
                f"on_uncertain_create must be one of {ON_UNCERTAIN_CREATE_CHOICES}, "
                f"got {on_uncertain_create!r}"
            )
        if on_input_change not in ON_INPUT_CHANGE_CHOICES:
            raise ValueError(
                f"on_input_change must be one of {ON_INPUT_CHANGE_CHOICES}, got {on_input_change!r}"
            )
        self.hook = hook
        self.store = store
        self.job = job
        self.log = log
        self.cancel = cancel
        self.generation = generation
        self.on_input_change = on_input_change
        self.create: CreateCall = create or self._create_with_hook
        self.max_requests_in_flight = max_requests_in_flight
        self.on_external_cancel = on_external_cancel
        self.on_uncertain_create = on_uncertain_create
        self.sleep = sleep
        #: Free checks run once, just before this submission's first paid create (and before its
        #: intent): a try that only re-attaches, adopts or finds the job done makes no call for them.
        self.before_first_create = before_first_create
        #: Updated as batches are recorded, so that a kill mid-submission cancels what exists.
        self.batch_ids: list[str] = []

    def run(self) -> JobRecord:
        """The record with the job's batches created, as many as ``max_requests_in_flight`` and the
        processing queue allow (or the finished record of an earlier try)."""
        record = self._record()
        if record.finished:
            return record
        record.queue_full_since = None  # each try waits its own ``timeout`` for room in the queue
        self._submit(record, record.round(1).slices)  # ``self.job`` is the whole input: round 1
        return record

    def run_round(self, record: JobRecord, round_record: RoundRecord) -> None:
        """Bring a round (``self.job`` is what it sends: the whole input, or a subset of it) in line with
        the API, each alike: intent, watermark and proof id first, every batch of every round excluded
        from a lost create's search."""
        if round_record.fingerprint != self.job.fingerprint:
            raise JobRecordError(
                f"round {round_record.number} on record (fingerprint {round_record.fingerprint[:16]}) is not "
                f"the round the earlier round's results give now ({self.job.fingerprint[:16]}): the input "
                "or the results changed; nothing was sent. Check the batches in the Anthropic console, then "
                "clear the task to submit afresh."
            )
        self._submit(record, round_record.slices)

    def _submit(self, record: JobRecord, entries: list[SliceRecord]) -> None:
        """Re-attach or adopt what earlier tries made, then create the missing batches in order, as
        many as ``max_requests_in_flight`` and the processing queue leave room for. The rest are
        created by a later call, once batches in flight have ended (their slices' ``ended_counts``)."""
        self.batch_ids = record.all_batch_ids
        missing: list[tuple[BatchSlice, SliceRecord]] = []
        for part, entry in zip(self.job.slices, entries, strict=True):
            if entry.ended_counts is not None:  # ended in an earlier wave
                continue
            if entry.batch_id and self._reattach(record, entry):
                continue
            if entry.intent_at and self._adopt_orphan(record, part, entry):
                continue
            missing.append((part, entry))
        # A batch processes its proof request too: it counts toward the limit.
        in_flight = sum(
            entry.count + PROOF_RESERVED_REQUESTS
            for entry in entries
            if entry.batch_id and entry.ended_counts is None
        )
        for position, (part, entry) in enumerate(missing):
            limit = self.max_requests_in_flight
            if limit is not None and in_flight and in_flight + part.count + PROOF_RESERVED_REQUESTS > limit:
                self.log.info(
                    "Holding back %d of %d parts: %d requests of this job are in flight and "
                    "max_requests_in_flight is %d; they are created as earlier batches end",
                    len(missing) - position,
                    len(self.job.slices),
                    in_flight,
                    limit,
                )
                return
            if not self._create(record, part, entry, nothing_in_flight=not in_flight):
                return
            in_flight += part.count + PROOF_RESERVED_REQUESTS

    # -- the record -------------------------------------------------------------------------------

    def _record(self) -> JobRecord:
        """The earlier tries' record of this job, or a fresh one; refuses to guess on changed input."""
        record = self.store.load()
        if record is None:
            return JobRecord.for_job(self.job, generation=self.generation)
        if record.generation is None or self.generation is None:
            # No clear generation to compare (a record of the previous provider version, or no task
            # instance): a finished job is taken as cleared, as that version did.
            cleared = record.finished
        else:
            cleared = record.generation != self.generation
        if record.matches(self.job):
            if record.finished and cleared:
                self.log.info(
                    "The task was cleared after its job (batches %s) finished: submitting the input afresh",
                    ", ".join(record.all_batch_ids),
                )
                return JobRecord.for_job(self.job, generation=self.generation)
            if record.finished:
                self.log.info(
                    "An earlier try of this task finished this job (batches %s): returning its manifest "
                    "without any paid call",
                    ", ".join(record.all_batch_ids),
                )
            else:
                self.log.info(
                    "Resuming the job an earlier try started (batches on record: %s)",
                    ", ".join(record.all_batch_ids) or "none yet",
                )
                if self.generation is not None and record.generation != self.generation:
                    # A cleared try takes the job over: its own retries must re-attach, not take the
                    # job's end for a clear (the record's generation is the clear it belongs to).
                    record.generation = self.generation
                    self._save(record)
            return record
        if record.finished and cleared:
            self.log.info("The task was cleared and its input changed: submitting the new input")
            return JobRecord.for_job(self.job, generation=self.generation)
        earlier = record.known_batch_ids
        if self.on_input_change == "fail":
            raise InputChangedError(
                f"The input changed since an earlier try of this task submitted it (fingerprint "
                f"{record.fingerprint[:16]}, now {self.job.fingerprint[:16]}); that try's batch(es) "
                f"{', '.join(earlier) or '(none created yet)'} "
                f"{'ended' if record.finished else 'may still be running and billed'}. Nothing new was sent. "
                "To go on: restore the input to re-attach; or set on_input_change='cancel_and_resubmit' to "
                "cancel those batches and submit the new input; or clear the task once they have ended."
            )
        if earlier:
            self.cancel(earlier, "the input changed and on_input_change='cancel_and_resubmit'")
        self.log.warning(
            "The input changed since an earlier try: submitting the new input (earlier batches %s canceled "
            "where still running)",
            ", ".join(earlier) or "none",
        )
        return JobRecord.for_job(self.job, generation=self.generation)

    def _save(self, record: JobRecord) -> None:
        record.check_consistent()
        self.store.save(record)
        self.batch_ids = record.all_batch_ids

    # -- the three ways a part of the job gets its batch ------------------------------------------

    def _reattach(self, record: JobRecord, entry: SliceRecord) -> bool:
        """Whether the recorded batch can be waited on: not deleted; if canceled, its finished results
        are kept and its unfinished requests resumed by a follow-up round once it ends (or, canceled by
        someone else, the task fails: :func:`.rounds.check_cancel_resumable`)."""
        assert entry.batch_id is not None
        try:
            batch = self.hook.get_batch(entry.batch_id)
        except NotFoundError as exc:
            intent = entry.intent_time
            if intent is not None and (utcnow() - intent).total_seconds() < NOT_FOUND_GRACE_SECONDS:
                return True  # a fresh batch can answer 404 for a few seconds
            raise BatchWaitError(
                f"batch {entry.batch_id}, created by an earlier try, is not found (deleted?); not "
                f"resubmitting it on a guess. Clear the task (or delete its '{RECORD_KEY}' state) to "
                "submit afresh."
            ) from exc
        if batch.cancel_initiated_at is not None:
            check_cancel_resumable(
                record, batch.id, batch.cancel_initiated_at, self.on_external_cancel, self.log
            )
        self.log.info("Re-attached to batch %s (%s)", batch.id, batch.processing_status)
        return True

    def _adopt_orphan(self, record: JobRecord, part: BatchSlice, entry: SliceRecord) -> bool:
        """A create was sent and its answer never recorded: adopt its batch once proven its own.

        True: adopted. False: no candidate is its batch (none listed, or every candidate ended without
        the proof id): the part is created afresh. Raises :class:`ProofPending` while candidates run
        (or, with ``on_uncertain_create="fail"``, :class:`BatchCreateUncertainError` saying what is known).
        """
        if entry.watermark is None or entry.proof_id is None:
            raise BatchCreateUncertainError(
                f"An earlier try (of an older provider version) sent a create at {entry.intent_at} and did "
                "not record its answer, and that create carried no proof request, so its batch cannot be "
                "told apart from other jobs' batches of the same size. Nothing was adopted, sent again or "
                "canceled. Do not cancel batches on a guess: they may be other jobs'. Once the batches "
                f"of {entry.count} requests made around then have ended, check their results' custom_ids; "
                "then clear the task to submit afresh (that sends this part again).",
            )
        watermark = CreateWatermark.from_json(entry.watermark)
        until = CreateWatermark.from_json(entry.search_until) if entry.search_until else None
        size = entry.count + PROOF_RESERVED_REQUESTS  # the proof request is one of the batch's requests
        found = self.hook.create_candidates(
            watermark, size, exclude=[*record.known_batch_ids, *entry.disproven], until=until
        )
        entry.search_until = found.until.to_json()
        pending: list[str] = []
        for batch in found.batches:
            if batch.processing_status != "ended":
                pending.append(batch.id)
                continue
            self.hook.check_results_ready([batch])
            proof_kind = read_proof(self.hook.iter_results_bytes, batch.id, entry.proof_id)
            if proof_kind is None:
                self.log.info(
                    "Batch %s (%d requests, made since the lost create) ended without this create's proof "
                    "request %s: it is not this job's; it is left alone",
                    batch.id,
                    size,
                    entry.proof_id,
                )
                entry.disproven.append(batch.id)
                continue
            self.log.warning(
                "The create sent at %s lost its answer; its proof request %s is in the results of batch "
                "%s: adopting batch %s",
                entry.intent_at,
                entry.proof_id,
                batch.id,
                batch.id,
            )
            entry.batch_id = batch.id
            entry.proof_kind = proof_kind
            entry.candidates = []
            self._save(record)
            return True
        entry.candidates = pending
        self._save(record)
        if not pending:
            self.log.info(
                "The create sent at %s lost its answer and no batch listed since carries its proof request "
                "(candidates ruled out: %s): it made no batch; creating the part afresh",
                entry.intent_at,
                ", ".join(entry.disproven) or "none",
            )
            return False
        if self.on_uncertain_create == "fail":
            raise BatchCreateUncertainError(
                f"The create of part {part.index + 1} sent at "
                f"{entry.intent_at} lost its answer. Known: it may have made a billed batch; batches "
                f"{', '.join(pending)} ({size} requests, made since) have not ended, and only "
                f"their results can show whether one carries this create's proof request {entry.proof_id}"
                f"{'; ruled out already: ' + ', '.join(entry.disproven) if entry.disproven else ''}. "
                "Nothing was adopted, sent again or canceled, and nothing more was paid. Do not cancel "
                "these batches: they may be other jobs'. Retry the task after they end (it adopts the one "
                "that is this job's, or creates the part), or set on_uncertain_create='wait_for_proof' to "
                "wait for them without holding a worker slot.",
                pending,
            )
        raise ProofPending(pending, part.index)

    def _create(
        self, record: JobRecord, part: BatchSlice, entry: SliceRecord, *, nothing_in_flight: bool
    ) -> bool:
        """The paid call, bracketed by the intent (with its watermark and proof id) and the id. False
        when the API refused it for pace or a full processing queue (a 429 makes no batch): the intent
        is taken back, and the part is created later. Only a refusal with ``nothing_in_flight`` starts
        the clock of ``queue_full_since``: time spent waiting for the job's own batches is not time
        spent waiting for room. A lost answer is settled by proof (``_adopt_orphan``)."""
        if self.before_first_create is not None:
            check, self.before_first_create = self.before_first_create, None
            check()
        for _ in range(MAX_CREATES_PER_TRY):
            watermark = self.hook.create_watermark()
            entry.intent_at = utcnow().isoformat()
            entry.watermark = watermark.to_json()
            entry.proof_id = new_proof_id()
            entry.proof_kind = entry.search_until = None
            entry.candidates = []  # ``disproven`` stays: batches once ruled out never become this part's
            self._save(record)  # the intent and its proof id, before the paid call
            try:
                batch = self.create(part, watermark, record.known_batch_ids, entry.proof_id)
            except RateLimitError as exc:
                entry.intent_at = entry.watermark = entry.proof_id = None
                if nothing_in_flight and record.queue_full_since is None:
                    record.queue_full_since = utcnow().isoformat()
                self._save(record)
                self.log.warning(
                    "The create of part %d of %d was refused (HTTP 429, no batch made: %s); it is sent "
                    "again once the job's batches in flight end, or after a pause when none are",
                    part.index + 1,
                    len(self.job.slices),
                    exc.message,
                )
                return False
            except CreateAnswerLostError as exc:
                self.log.warning(
                    "%s Looking in %.0f s for the batches it may have made; only one whose results carry "
                    "its proof request %s is adopted",
                    exc,
                    LISTING_LAG_SECONDS,
                    entry.proof_id,
                )
                self.sleep(LISTING_LAG_SECONDS)
                if self._adopt_orphan(record, part, entry):
                    record.queue_full_since = None
                    return True
                continue  # it made no batch: create the part again, with a new intent and proof id
            if batch.id in record.known_batch_ids:
                raise BatchCreateUncertainError(
                    f"the create of part {part.index + 1} answered batch {batch.id}, which is already this "
                    "job's; not recording one batch twice, and nothing was canceled. Report this to the "
                    "provider's maintainers with the task's log.",
                    [batch.id],
                )
            entry.batch_id = batch.id
            record.queue_full_since = None
            self._save(record)  # the id, right after
            self.log.info(
                "Created batch %s (%d of %d, %d requests and the proof request)",
                batch.id,
                part.index + 1,
                len(self.job.slices),
                part.count,
            )
            return True
        raise BatchCreateUncertainError(
            f"{MAX_CREATES_PER_TRY} creates of part {part.index + 1} in a row lost their answers and made "
            "no batch that carries their proof request; nothing was adopted or canceled. Retry the task: "
            "it looks once more, then creates the part.",
        )

    def _create_with_hook(
        self, part: BatchSlice, watermark: CreateWatermark, exclude: Sequence[str], proof_id: str
    ) -> MessageBatch:
        """The paid call: one batch, its body streamed from the source with the proof request last;
        API errors located by line. A lost answer is not looked up here (see ``_adopt_orphan``)."""
        try:
            return self.hook.create_batch(
                self.job.body(part, proof_id), watermark=watermark, exclude=exclude, look_up_lost=False
            )
        except InvalidRequestError as exc:  # "requests.N..." -> the file line and custom_id
            message = self.job.explain_api_error(part, exc.message)
            if message == exc.message:
                raise
            raise type(exc)(
                message, status_code=exc.status_code, error_type=exc.error_type, request_id=exc.request_id
            ) from exc
