"""The drive of a create task's job: its rounds, each alike, from the first create to the outcome.

:class:`JobDrive` brings the job's durable record (:mod:`~airflow_provider_batches.job_state`) to its
end: it waits for the batches of the round in flight, creates the round's held-back slices as they end
(``max_requests_in_flight``, a full processing queue: a pause when none of the job's batches is in
flight), and once the round has ended plans the next one (:class:`~.rounds.JobRounds`: re-drive, resume)
until nothing is left to send; then it records the job finished and applies the outcome policy.

How the task waits is the task's own (:class:`JobTask`): in the worker, or deferred to the triggerer,
in which case the task resumes later and drives on with a new ``JobDrive`` over the same record. The
create operator (:mod:`.batches`) is the Airflow face over this object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_provider_batches._compat import AirflowTaskTimeout
from airflow_provider_batches.errors import BatchQueueFullError, BatchTimeoutError
from airflow_provider_batches.failures import ErrorSummary, summarize_errors
from airflow_provider_batches.job_state import JobRecord, JobStore, RoundRecord, utcnow
from airflow_provider_batches.operators.cancel_delete import cancel_batches
from airflow_provider_batches.operators.manifest import job_manifest
from airflow_provider_batches.operators.rounds import JobRounds, final_counts, sent_again, wait_label
from airflow_provider_batches.operators.submission import JobSubmission, ProofPending
from airflow_provider_batches.policy import WaitSpec, check_outcome, parse_wait_event, raise_for_wait_event
from airflow_provider_batches.proof import counts_without_proofs
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.waiting import NOT_FOUND_GRACE_SECONDS

if TYPE_CHECKING:
    from logging import Logger

    from airflow_provider_batches.hooks.anthropic import AnthropicHook
    from airflow_provider_batches.requests import PreparedJob

T = TypeVar("T")

#: Per batch id, its final request counts.
Counts = Mapping[str, Mapping[str, int]]


class JobTask(Protocol):
    """How the task that runs a drive waits: here, or deferred (the call raises, freeing the worker, and
    the task resumes later where the method's docstring says)."""

    def wait_for_round(
        self, batch_ids: list[str], spec: WaitSpec, manifest: dict[str, Any], number: int
    ) -> dict[str, dict[str, int]]:
        """The ended counts of the round's batches in flight (deferred: resumed by ``execute_complete``)."""
        ...

    def wait_for_candidates(self, batch_ids: list[str], spec: WaitSpec) -> object:
        """Until a lost create's candidates end (deferred: resumed by ``resume_after_proof``)."""
        ...

    def pause(self, until: datetime) -> None:
        """Until ``until`` (a full queue, ``Redrive.delay``; deferred: resumed by ``resume_submission``)."""
        ...


@dataclass(frozen=True)
class DriveOptions:
    """The create operator's settings a drive applies."""

    timeout: float
    poll_interval: float
    max_poll_interval: float
    progress_interval: float
    cancel_on_timeout: bool
    fail_on_partial_error: bool
    max_error_rate: float | None


class JobDrive:
    """Drives one job's record through its rounds; ``submission`` is the retry-safe submission of the
    round being created (:class:`~.submission.JobSubmission`), made by ``submission_for``."""

    def __init__(
        self,
        hook: AnthropicHook,
        store: JobStore,
        task: JobTask,
        options: DriveOptions,
        *,
        rounds: JobRounds,
        submission_for: Callable[[PreparedJob], JobSubmission],
        on_created: Callable[[list[str]], None],
        log: Logger,
    ) -> None:
        self.hook = hook
        self.store = store
        self.task = task
        self.options = options
        self.rounds = rounds
        self.submission_for = submission_for
        #: Told every batch of the job after each submission (the task's console link).
        self.on_created = on_created
        self.log = log
        self.submission: JobSubmission | None = None
        self.record: JobRecord | None = None
        #: The round this drive brought in line with the API and that has nothing to create since:
        #: not submitted again (a round is submitted when it has slices left to create after a wait or a
        #: pause, or when this try has not yet re-attached to it).
        self._in_line: RoundRecord | None = None

    @property
    def owned_batch_ids(self) -> list[str]:
        """The job's batches as far as this try knows (a kill cancels them)."""
        if self.submission is not None:
            return self.submission.batch_ids
        return self.record.all_batch_ids if self.record is not None else []

    # -- the drive ------------------------------------------------------------------------------------

    def start(self, job: PreparedJob) -> JobRecord:
        """A try's first step: the record brought in line with ``job`` (the whole input): re-attached,
        adopted or created, as many slices as the queue allows; or an earlier try's finished record."""
        submission = self.submission = self.submission_for(job)
        record = self.record = self.proven(submission.run)
        self._in_line = record.round(1)
        self.on_created(record.all_batch_ids)
        return record

    def run(self, record: JobRecord) -> dict[str, Any]:
        """Drive the job to its end and return the manifest with its outcome."""
        self.record = record
        if self.rounds.policy is not None and record.redrive is None:
            record.redrive = self.rounds.policy.to_json()
            self.store.save(record)
        if self._in_line is None:  # resumed: the round in flight is as the trigger or pause left it
            self._settle(record.current)
        while True:
            current = record.current
            if current.ended_counts is not None:
                planned = self.rounds.plan_next(record)
                if planned is None:
                    return self.complete(record)
                record.rounds.append(planned)
                self.store.save(record)  # the round's intent, before any of its creates
                continue
            if current is not self._in_line:
                self._submit(record, current)
            waiting = current.waiting_batch_ids
            if not waiting:  # every create refused for a full queue: nothing of ours to wait on
                self._pause_for_queue(record)
            else:
                counts = self.without_proofs(record, self._wait(record, current, waiting))
                current.record_ended(counts)
                self.store.save(record)
            self.rounds.forget_input()  # time passed: the next wave or round reads the input again
            self._settle(current)

    def resume_after_wait(self, record: JobRecord, event: Any) -> dict[str, Any]:
        """The trigger's event for the round in flight, checked against the record (which says what was
        waited on) and recorded; then drive on."""
        self.record = record
        current = record.current
        waiting = current.waiting_batch_ids
        wait = parse_wait_event(event, expected_batch_ids=waiting if current.ended_counts is None else None)
        cancel = partial(self.cancel_own, record, waiting, "the task timed out")
        counts = raise_for_wait_event(wait, on_timeout=cancel if self.options.cancel_on_timeout else None)
        if current.ended_counts is None:
            current.record_ended(self.without_proofs(record, counts))
            self.store.save(record)
        return self.run(record)

    def complete_without_waiting(self, record: JobRecord) -> dict[str, Any]:
        """``wait_for_completion=False``: the job is done once every slice has its batch."""
        if record.current.unsubmitted:
            created = record.current.batch_ids
            raise BatchQueueFullError(
                f"the processing queue is full: {len(created)} of {len(record.current.slices)} batches "
                f"were created ({', '.join(created) or 'none'}) and the create of the next "
                "one was refused (HTTP 429, no batch made). Nothing is lost: the task's retry "
                "re-attaches to those batches and creates the rest. Set retries (and retry_delay) on "
                "the task, or wait_for_completion=True to create them as room frees up."
            )
        return self.complete(record)

    def _settle(self, current: RoundRecord) -> None:
        """Time passed (a wait, a pause, a deferral): the round is submitted again only if it has slices
        left to create."""
        self._in_line = None if current.unsubmitted else current

    def _submit(self, record: JobRecord, current: RoundRecord) -> None:
        """Submit (or re-attach to) the round in flight, after its ``Redrive.delay``; its requests (and
        the whole input, checked) are read again first."""
        if current.not_before is not None and not current.batch_ids:
            moment = datetime.fromisoformat(current.not_before)
            remaining = (moment - datetime.now(moment.tzinfo)).total_seconds()
            if remaining > 0:
                self.log.info("Round %d starts in %.1f s (Redrive.delay)", current.number, remaining)
                self.task.pause(moment)
                self.rounds.forget_input()
        job = self.rounds.job_of(record, current.number)
        submission = self.submission = self.submission_for(job)
        self.proven(lambda: submission.run_round(record, current))
        self._in_line = current
        self.on_created(record.all_batch_ids)

    def _pause_for_queue(self, record: JobRecord) -> None:
        """Every create was refused for a full processing queue and none of the job's batches is in
        flight: try again after ``poll_interval`` (deferred: without holding a worker slot), for up to
        ``timeout`` since the first refusal."""
        timeout = self.options.timeout
        since = datetime.fromisoformat(record.queue_full_since) if record.queue_full_since else utcnow()
        waited = (utcnow() - since).total_seconds()
        if waited >= timeout:
            raise BatchQueueFullError(
                f"the processing queue stayed full for {waited:.0f} s (timeout {timeout:.0f} s): "
                f"{record.current.unsubmitted} slice(s) of the job were never created "
                "and nothing was paid for them. Batches of the job so far: "
                f"{', '.join(record.all_batch_ids) or 'none'}. Retry the task when the organization's queue "
                "has room (its retry re-attaches to those batches), or set max_requests_in_flight."
            )
        pause = min(self.options.poll_interval, timeout - waited)
        self.log.info("The processing queue is full: trying the create again in %.0f s", pause)
        self.task.pause(utcnow() + timedelta(seconds=pause))

    def _wait(self, record: JobRecord, current: RoundRecord, waiting: list[str]) -> Counts:
        """The ended counts of the round's batches in flight, waited for by the task."""
        options = self.options
        spec = WaitSpec(
            deadline=time.time() + options.timeout,
            poll_interval=options.poll_interval,
            max_poll_interval=options.max_poll_interval,
            not_found_grace_until=time.time() + NOT_FOUND_GRACE_SECONDS,
            progress_interval=options.progress_interval,
            label=wait_label(current, waiting),
        )
        try:
            return self.task.wait_for_round(waiting, spec, job_manifest(record), current.number)
        except (BatchTimeoutError, AirflowTaskTimeout):
            if options.cancel_on_timeout:
                self.cancel_own(record, waiting, "the task timed out")
            raise

    # -- a lost create's proof ------------------------------------------------------------------------

    def proven(self, submit: Callable[[], T]) -> T:
        """Run a submission step; while a lost create's candidates run, wait for them to end (acting
        on none of them) and run it again, so it adopts the proven one or creates the part."""
        while True:
            try:
                return submit()
            except ProofPending as pending:
                self._wait_for_candidates(pending)

    def _wait_for_candidates(self, pending: ProofPending) -> None:
        """Wait for the batches that may be a lost create's to end. A timeout cancels nothing: none of
        them is proven the job's."""
        self.log.info(
            "A lost create of part %d may have made one of batches %s: waiting for them to end, to read "
            "from their results which one, if any, is this job's (none is adopted or canceled before)",
            pending.part + 1,
            ", ".join(pending.batch_ids),
        )
        options = self.options
        spec = WaitSpec(time.time() + options.timeout, options.poll_interval, options.max_poll_interval)
        try:
            self.task.wait_for_candidates(pending.batch_ids, spec)
        except BatchTimeoutError as exc:
            raise BatchTimeoutError(proof_timeout_message(pending.batch_ids, options.timeout)) from exc

    def without_proofs(self, record: JobRecord, counts: Counts) -> dict[str, dict[str, int]]:
        """The ended batches' counts less their proof requests (not the user's); each proof's result
        type is kept in the record."""
        parts = {part.batch_id: part for part in record.all_slices if part.batch_id and part.proof_id}
        proofs = {batch_id: part.proof_id for batch_id, part in parts.items() if part.proof_id}
        kinds = {batch_id: part.proof_kind for batch_id, part in parts.items()}
        user = counts_without_proofs(counts, proofs, self.hook.iter_results_bytes, kinds)
        for batch_id, kind in kinds.items():
            parts[batch_id].proof_kind = kind
            if kind is None and batch_id in counts:
                self.log.warning("Batch %s ended without its proof request in its results", batch_id)
        return user

    # -- the end ------------------------------------------------------------------------------------

    def complete(self, record: JobRecord) -> dict[str, Any]:
        """Record the job as finished *before* anything else can fail, so a retry after this point
        returns the same manifest instead of paying again; then the outcome."""
        record.finished = True
        self.store.save(record)
        return self.outcome(record)

    def outcome(self, record: JobRecord) -> dict[str, Any]:
        """The manifest, with the final counts once every round ended (the outcome policy applied)."""
        manifest = job_manifest(record)
        final = final_counts(record)
        if final is None:  # not waited for
            return manifest
        read: list[ErrorSummary] = []
        # After re-drive, each request is counted once, by its last round's answer.
        by_round = len(record.rounds) > 1 or record.redrive is not None

        def errors() -> str:  # read only when some request failed (the results download is free)
            rounds = [(each.number, each.ended_counts or {}) for each in record.rounds]
            redrive = Redrive.from_json(record.redrive) if record.redrive else None
            superseded = partial(sent_again, record, redrive)
            failed = final.get("errored", 0) + final.get("expired", 0) if by_round else None
            read.append(summarize_errors(self.hook, rounds, superseded=superseded, failed=failed))
            return read[-1].describe()

        if by_round:
            self.log.info("Outcome after %d round(s):", len(record.rounds))
        totals = check_outcome(
            {"job": final} if by_round else record.current.ended_counts or {},
            fail_on_partial_error=self.options.fail_on_partial_error,
            max_error_rate=self.options.max_error_rate,
            log=self.log,
            errors=errors,
        )
        completed = {**manifest, "request_counts": totals}
        if read:
            completed["errors"] = read[-1].to_json()
        return completed

    def cancel_own(
        self,
        record: JobRecord | None,
        batch_ids: Sequence[str],
        reason: str,
        *,
        record_within: float | None = None,
    ) -> None:
        """Cancel the job's batches, the cancel recorded first as the job's own: a retry then resumes
        their unfinished requests instead of taking them for canceled by someone else.

        ``record`` None: loaded from the store. ``record_within`` bounds the recording (``on_kill`` runs
        in a signal handler, where the store's channel may be held by the interrupted code): past it the
        cancel goes ahead unrecorded.
        """
        if not batch_ids:
            return
        store = self.store

        def note() -> None:
            loaded = store.load() if record is None else record
            if loaded is not None:
                loaded.note_cancels(batch_ids, reason)
                store.save(loaded)

        try:
            if record_within is None:
                note()
            else:
                worker = threading.Thread(target=note, daemon=True, name="anthropic-batch-cancel-record")
                worker.start()
                worker.join(record_within)
                if worker.is_alive():
                    raise TimeoutError(f"the job record did not answer within {record_within:.0f} s")
        except Exception as exc:  # the cancel still stops the spend; a retry then asks before resuming
            self.log.warning(
                "Could not record the cancel of %s as this job's own (%s): a retry will take it for "
                "someone else's (see on_external_cancel)",
                ", ".join(batch_ids),
                exc,
            )
        cancel_batches(self.hook, batch_ids, reason=reason, log=self.log)


def proof_timeout_message(batch_ids: Sequence[str], timeout: float) -> str:
    return (
        f"A create of this job lost its answer, and batches {', '.join(batch_ids)} (of its size, "
        f"made since) did not end within timeout={timeout:.0f} s; only their results can prove whether one "
        "of them is this job's. None of them was adopted or canceled, and nothing more was paid. Do not "
        "cancel them: they may be other jobs'. Retry the task: it goes on waiting for them (or set a "
        "longer timeout)."
    )
