"""The create operator's retry-safe submission: which batches a try must create, re-attach or adopt.

A small state machine over the task's durable :class:`~airflow_provider_batches.job_state.JobRecord`,
kept apart from the operator so that every path (re-attach, adopt a lost create's batch, changed
input, clear versus retry) is tested by injecting the paid call instead of overriding private
methods. It never sends a create without first recording the intent and the watermark, and never
records a batch that another part of the job already owns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from airflow_provider_batches.client_core import CreateWatermark
from airflow_provider_batches.errors import (
    BatchCreateUncertainError,
    BatchWaitError,
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
from airflow_provider_batches.requests import BatchSlice, PreparedJob
from airflow_provider_batches.waiting import NOT_FOUND_GRACE_SECONDS

if TYPE_CHECKING:
    from logging import Logger

    from airflow_provider_batches.hooks.anthropic import AnthropicHook

OnInputChange = Literal["fail", "cancel_and_resubmit"]
ON_INPUT_CHANGE_CHOICES: tuple[str, ...] = ("fail", "cancel_and_resubmit")

#: The paid call: create one batch of the job, given the watermark and the batches to exclude.
CreateCall = Callable[[BatchSlice, CreateWatermark, Sequence[str]], MessageBatch]
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
    ) -> None:
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
        #: Updated as batches are recorded, so that a kill mid-submission cancels what exists.
        self.batch_ids: list[str] = []

    def run(self) -> JobRecord:
        """The record with the job's batches created, as many as ``max_requests_in_flight`` and the
        processing queue allow (or the finished record of an earlier try)."""
        record = self._record()
        if record.finished:
            return record
        record.queue_full_since = None  # each try waits its own ``timeout`` for room in the queue
        self._submit(record, record.slices)
        return record

    def submit_held_back(self, record: JobRecord) -> None:
        """Create the first round's parts held back earlier, now that some of its batches ended."""
        self._submit(record, record.slices)

    def run_round(self, record: JobRecord, round_record: RoundRecord) -> None:
        """Bring a follow-up round (``self.job`` is its subset of the input) in line with the API, with
        the same proof as the first round: intent and watermark first, every batch of every round
        excluded from a lost create's search."""
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
            if entry.intent_at and self._adopt_orphan(record, entry):
                continue
            missing.append((part, entry))
        in_flight = sum(entry.count for entry in entries if entry.batch_id and entry.ended_counts is None)
        for position, (part, entry) in enumerate(missing):
            limit = self.max_requests_in_flight
            if limit is not None and in_flight and in_flight + part.count > limit:
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
            in_flight += part.count

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
                    ", ".join(record.batch_ids),
                )
                return JobRecord.for_job(self.job, generation=self.generation)
            if record.finished:
                self.log.info(
                    "An earlier try of this task finished this job (batches %s): returning its manifest "
                    "without any paid call",
                    ", ".join(record.batch_ids),
                )
            else:
                self.log.info(
                    "Resuming the job an earlier try started (batches on record: %s)",
                    ", ".join(record.batch_ids) or "none yet",
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

    def _adopt_orphan(self, record: JobRecord, entry: SliceRecord) -> bool:
        """A try sent this create and did not live to record its answer: adopt its batch if provably its."""
        if entry.watermark is None:
            raise BatchCreateUncertainError(
                f"An earlier try (of an older provider version) sent a create at {entry.intent_at} and did "
                "not record its answer; without a watermark its batch cannot be told apart. Check the "
                f"Anthropic console, cancel any batch of {entry.count} requests it made, then clear the task."
            )
        found = self.hook.find_created_batch(
            CreateWatermark.from_json(entry.watermark),
            entry.count,
            exclude=record.known_batch_ids,
            reason=f"sent by an earlier try at {entry.intent_at}",
        )
        if found is None:
            self.log.info(
                "An earlier try sent a create at %s; no batch of %d requests is listed since: creating it",
                entry.intent_at,
                entry.count,
            )
            return False
        self.log.warning(
            "An earlier try sent a create at %s and did not record its answer: adopting batch %s, the one "
            "batch of %d requests listed since that is not already this job's",
            entry.intent_at,
            found.id,
            entry.count,
        )
        entry.batch_id = found.id
        self._save(record)
        return True

    def _create(
        self, record: JobRecord, part: BatchSlice, entry: SliceRecord, *, nothing_in_flight: bool
    ) -> bool:
        """The paid call, bracketed by the intent (with its watermark) and the id. False when the API
        refused it for pace or a full processing queue (a 429 makes no batch): the intent is taken
        back, and the part is created later. Only a refusal with ``nothing_in_flight`` starts the
        clock of ``queue_full_since``: time spent waiting for the job's own batches is not time
        spent waiting for room."""
        watermark = self.hook.create_watermark()
        entry.intent_at = utcnow().isoformat()
        entry.watermark = watermark.to_json()
        self._save(record)  # the intent, before the paid call
        try:
            batch = self.create(part, watermark, record.known_batch_ids)
        except RateLimitError as exc:
            entry.intent_at = None
            entry.watermark = None
            if nothing_in_flight and record.queue_full_since is None:
                record.queue_full_since = utcnow().isoformat()
            self._save(record)
            self.log.warning(
                "The create of part %d of %d was refused (HTTP 429, no batch made: %s); it is sent again "
                "once the job's batches in flight end, or after a pause when none are",
                part.index + 1,
                len(self.job.slices),
                exc.message,
            )
            return False
        if batch.id in record.known_batch_ids:
            raise BatchCreateUncertainError(
                f"the create of part {part.index + 1} answered batch {batch.id}, which is already this "
                "job's; not recording one batch twice. Check the Anthropic console.",
                [batch.id],
            )
        entry.batch_id = batch.id
        record.queue_full_since = None
        self._save(record)  # the id, right after
        self.log.info(
            "Created batch %s (%d of %d, %d requests)",
            batch.id,
            part.index + 1,
            len(self.job.slices),
            part.count,
        )
        return True

    def _create_with_hook(
        self, part: BatchSlice, watermark: CreateWatermark, exclude: Sequence[str]
    ) -> MessageBatch:
        """The paid call: one batch, its body streamed from the source; API errors located by line."""
        try:
            return self.hook.create_batch(self.job.body(part), watermark=watermark, exclude=exclude)
        except InvalidRequestError as exc:  # "requests.N..." -> the file line and custom_id
            message = self.job.explain_api_error(part, exc.message)
            if message == exc.message:
                raise
            raise type(exc)(
                message, status_code=exc.status_code, error_type=exc.error_type, request_id=exc.request_id
            ) from exc
