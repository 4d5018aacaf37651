"""The operator that creates Message Batches (cancel and delete: :mod:`.cancel_delete`, re-exported here).

``AnthropicCreateBatchOperator`` validates and streams the input, splits it into as many batches as
the API limits require, records what it submits in durable per-task state (so a retry re-attaches
instead of paying twice), then waits in the worker or, deferred, in the triggerer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

from airflow_provider_batches._compat import AirflowTaskTimeout
from airflow_provider_batches.errors import (
    BatchQueueFullError,
    BatchTimeoutError,
    BatchWaitError,
)
from airflow_provider_batches.failures import ErrorSummary, summarize_errors
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import JobRecord, JobStore, generation_of, job_store_for, utcnow
from airflow_provider_batches.lineage import create_batch_lineage
from airflow_provider_batches.links import AnthropicBatchLink
from airflow_provider_batches.model_check import check_models
from airflow_provider_batches.operators.cancel_delete import (
    AnthropicCancelBatchOperator,
    AnthropicDeleteBatchOperator,
    cancel_batches,
    cancel_if_running,
)
from airflow_provider_batches.operators.rounds import (
    ON_EXTERNAL_CANCEL_CHOICES,
    JobRounds,
    OnExternalCancel,
    check_input_unchanged,
    current_round,
    final_counts,
    record_batches_ended,
    rounds_manifest,
    sent_again,
    unsubmitted_slices,
    wait_label,
    waiting_batch_ids,
)
from airflow_provider_batches.operators.submission import (
    ON_INPUT_CHANGE_CHOICES,
    ON_UNCERTAIN_CREATE_CHOICES,
    JobSubmission,
    OnInputChange,
    OnUncertainCreate,
    ProofPending,
)
from airflow_provider_batches.policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_PROGRESS_INTERVAL,
    WaitSpec,
    check_max_error_rate,
    check_outcome,
    default_deferrable,
    describe_counts,
    parse_wait_event,
    raise_for_wait_event,
    total_counts,
)
from airflow_provider_batches.prompts import build_prompt_requests
from airflow_provider_batches.proof import PROOF_RESERVED_REQUESTS, counts_without_proofs
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.requests import (
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    PreparedJob,
    RequestSource,
    prepare_job,
)
from airflow_provider_batches.structured_output import OutputSchema, StructuredOutput, with_output_schema
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from airflow_provider_batches.waiting import (
    DEFAULT_TIMEOUT,
    DEFER_TIMEOUT_MARGIN_SECONDS,
    NOT_FOUND_GRACE_SECONDS,
    wait_for_batches,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

T = TypeVar("T")

#: Also importable from here, their earlier home: the cancel and delete operators (now in
#: :mod:`.cancel_delete`) and the outcome and wait helpers (:mod:`~airflow_provider_batches.policy`,
#: :mod:`~airflow_provider_batches.waiting`).
__all__ = [
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "DEFER_TIMEOUT_MARGIN_SECONDS",
    "AnthropicCancelBatchOperator",
    "AnthropicCreateBatchOperator",
    "AnthropicDeleteBatchOperator",
    "cancel_batches",
    "cancel_if_running",
    "check_outcome",
    "default_deferrable",
    "describe_counts",
    "total_counts",
    "wait_for_batches",
]

# -- create ---------------------------------------------------------------------------------------

#: How long ``on_kill`` waits to record its cancel as the job's own before canceling unrecorded.
KILL_RECORD_SECONDS = 5.0


def job_manifest(record: JobRecord) -> dict[str, Any]:
    """What the create operator returns: small, and accepted by every ``batch_id`` argument.

    ``batches`` gives each batch's request count and custom_id digest, which the results transfer
    checks the results against before publishing anything. A re-driven job lists the batches of every
    round in ``batch_ids`` and ``batches``, and its ``rounds`` (see :mod:`.rounds`).
    """
    manifest: dict[str, Any] = {
        "batch_ids": record.all_batch_ids,
        "request_count": record.request_count,
        "fingerprint": record.fingerprint,
        "batches": record.batches(),
    }
    if record.redrive is not None:
        manifest["redrive"] = record.redrive
    if record.redrive is not None or record.rounds:
        manifest["rounds"] = rounds_manifest(record)
    return manifest


class AnthropicCreateBatchOperator(BaseOperator):
    """Submit requests as one or more Message Batches, wait for them, and return a small manifest.

    Retry-safe: what each try submits is recorded in durable per-task state (``task_state_store``),
    the intent *before* each paid create call and the batch id right after, so a retry re-attaches to
    the batches an earlier try created instead of paying for new ones (see the README's policy).

    :param requests: inline list of ``{"custom_id", "params"}`` requests (small jobs).
    :param requests_path: URI of a JSONL file of requests (any ObjectStoragePath; templated), streamed.
    :param requests_conn_id: connection for the storage of ``requests_path``.
    :param model: model for requests that name none.
    :param conn_id: the Anthropic connection.
    :param wait_for_completion: wait for the batches to end; otherwise return once they are created.
    :param deferrable: wait in the triggerer, freeing the worker slot.
    :param poll_interval: first wait between status polls (seconds); it backs off toward
        ``max_poll_interval``.
    :param timeout: seconds to wait before the batches are canceled and the task fails.
    :param fail_on_partial_error: fail when any request ended errored or expired (else a warning);
        the same as ``max_error_rate=0``.
    :param max_error_rate: the share of requests (0 to 1) that may end errored or expired before the
        task fails. Default None: a job fails only when no request succeeded; any other failure is a
        warning. Failures and warnings name the top error types, read from the results (free).
    :param progress_interval: seconds between the progress lines a wait logs (counts per state,
        elapsed time, round and wave), sync or deferred; 0 for none. They cost no API call.
    :param check_models: look each distinct model up in the Models API (free) before any paid call:
        an unknown or retired model, ``max_tokens`` above the model's limit, or a model without batch
        support fails the task naming the lines and the closest model ids.
    :param max_requests_per_batch: split the input into batches of at most this many requests.
    :param max_bytes_per_batch: ... and at most this many body bytes.
    :param on_input_change: what a retry does when the input differs from what an earlier try
        submitted: ``"fail"`` (default; nothing is sent, the error names the earlier batches) or
        ``"cancel_and_resubmit"`` (cancel the earlier batches still running, submit the new input).
    :param prompts: a prompt list instead of requests: strings, or dicts with ``prompt`` or ``messages``
        and per-prompt fields (see :mod:`airflow_provider_batches.prompts`); custom_ids ``prompt-<index>``.
    :param max_tokens: shared ``max_tokens`` of the prompts' requests.
    :param system: shared system prompt of the prompts' requests.
    :param message_params: other shared Messages parameters of the prompts' requests (``temperature``...).
    :param cancel_on_kill: cancel the batches when the task is killed (else they keep running and a
        later try re-attaches to them).
    :param cancel_on_timeout: cancel the batches when ``timeout`` passes (else they keep running and a
        retry re-attaches to them).
    :param output_schema: a Pydantic model class or JSON schema every answer must follow: put into
        each request (``output_config.format``, or a forced tool call on older models) before validation.
    :param redrive: a :class:`~airflow_provider_batches.redrive.Redrive` policy: once the batches end,
        the requests that failed transiently are submitted again as follow-up rounds (retry-safe like
        the first; ``timeout`` applies to each round's wait), and ``fail_on_partial_error`` judges the
        final outcome. Needs ``wait_for_completion``.
    :param max_requests_in_flight: at most this many of the job's requests processing at once (the
        organization's processing queue, or a share of it): the job is submitted slice by slice as its
        earlier batches end (``timeout`` applies to each wait). Batches are at most this size. Needs
        ``wait_for_completion``. Default: no limit; a create refused because the queue is full (HTTP
        429, no batch made) is sent again once the job's batches in flight end, or every
        ``poll_interval`` when none are, for up to ``timeout``.
    :param on_external_cancel: a batch of the job canceled by someone else (its cancel is not on the
        job's record, where the job's own timeout and kill cancels are): ``"fail"`` (default: the task
        fails naming it, nothing is sent) or ``"resume"`` (its unfinished requests are sent again in a
        follow-up round, its finished results kept, as after the job's own cancels).
    :param on_uncertain_create: after a create whose answer was lost, when batches that may be its own
        have not ended: ``"wait_for_proof"`` (default) waits for them to end (deferred: no worker slot;
        each wait up to ``timeout``), then adopts the one whose results carry the create's proof
        request, or creates the part afresh; ``"fail"`` fails at once, paying nothing more, with an
        error naming the candidates. Neither adopts, cancels or waits on a candidate as the job's.
    """

    template_fields: Sequence[str] = (
        "requests",
        "requests_path",
        "requests_conn_id",
        "model",
        "conn_id",
        "max_requests_per_batch",
        "max_bytes_per_batch",
    )
    operator_extra_links = (AnthropicBatchLink(),)
    ui_color = "#f0e4d8"

    def __init__(
        self,
        *,
        requests: Sequence[Mapping[str, Any]] | None = None,
        requests_path: str | None = None,
        requests_conn_id: str | None = None,
        model: str | None = None,
        conn_id: str = AnthropicHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        fail_on_partial_error: bool = False,
        max_error_rate: float | None = None,
        check_models: bool = True,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH,
        max_bytes_per_batch: int = MAX_BATCH_BYTES,
        output_schema: OutputSchema | None = None,
        on_input_change: OnInputChange = "fail",
        prompts: Sequence[str | Mapping[str, Any]] | None = None,
        max_tokens: int | None = None,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        message_params: Mapping[str, Any] | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        redrive: Redrive | None = None,
        max_requests_in_flight: int | None = None,
        on_external_cancel: OnExternalCancel = "fail",
        on_uncertain_create: OnUncertainCreate = "wait_for_proof",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_uncertain_create not in ON_UNCERTAIN_CREATE_CHOICES:
            raise ValueError(
                f"{self.task_id}: on_uncertain_create must be one of "
                f"{', '.join(ON_UNCERTAIN_CREATE_CHOICES)}, got {on_uncertain_create!r}"
            )
        self.on_uncertain_create = on_uncertain_create
        self.output_schema = None if output_schema is None else StructuredOutput.of(output_schema)
        if redrive is not None and (not isinstance(redrive, Redrive) or not wait_for_completion):
            raise ValueError(
                f"{self.task_id}: redrive must be a Redrive(...) and needs wait_for_completion=True, got "
                f"redrive={redrive!r}, wait_for_completion={wait_for_completion!r}"
            )
        if max_requests_in_flight is not None and (
            isinstance(max_requests_in_flight, bool)
            or not isinstance(max_requests_in_flight, int)
            or max_requests_in_flight < 1 + PROOF_RESERVED_REQUESTS
            or not wait_for_completion
        ):
            raise ValueError(
                f"{self.task_id}: max_requests_in_flight must be an integer of at least 2 (each batch also "
                "processes its proof request) and needs "
                "wait_for_completion=True (later slices are sent as earlier ones end), got "
                f"max_requests_in_flight={max_requests_in_flight!r}, "
                f"wait_for_completion={wait_for_completion!r}"
            )
        if on_input_change not in ON_INPUT_CHANGE_CHOICES:
            raise ValueError(
                f"{self.task_id}: on_input_change must be one of {', '.join(ON_INPUT_CHANGE_CHOICES)}, "
                f"got {on_input_change!r}"
            )
        if on_external_cancel not in ON_EXTERNAL_CANCEL_CHOICES:
            raise ValueError(
                f"{self.task_id}: on_external_cancel must be one of {', '.join(ON_EXTERNAL_CANCEL_CHOICES)}, "
                f"got {on_external_cancel!r}"
            )
        if [requests, requests_path, prompts].count(None) != 2:
            raise ValueError(
                f"{self.task_id}: pass exactly one of requests=[...], requests_path='...' or prompts=[...]"
            )
        if poll_interval <= 0 or timeout <= 0:
            raise ValueError(f"{self.task_id}: poll_interval and timeout must be positive")
        self.requests = requests
        self.requests_path = requests_path
        self.requests_conn_id = requests_conn_id
        self.model = model
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.timeout = timeout
        self.fail_on_partial_error = fail_on_partial_error
        self.max_error_rate = check_max_error_rate(max_error_rate, task_id=self.task_id)
        self.check_models = check_models
        self.progress_interval = float(progress_interval)
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.on_input_change = on_input_change
        self.redrive = redrive
        self.max_requests_in_flight = max_requests_in_flight
        self.on_external_cancel = on_external_cancel
        self._store: JobStore | None = None
        self._job: PreparedJob | None = None
        self._rounds: JobRounds | None = None
        self._owned_batch_ids: list[str] = []
        self._submission: JobSubmission | None = None
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.system = system
        self.message_params = message_params
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self._models: dict[str, int] = {}
        self._completed_manifest: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(self.conn_id)

    def source(self) -> RequestSource:
        """The job's requests as given (inline, a file, or built from prompts), with the output schema."""
        requests = self.requests
        if self.prompts is not None:
            requests = build_prompt_requests(
                self.prompts, max_tokens=self.max_tokens, system=self.system, params=self.message_params
            )
        source = RequestSource(
            requests=requests,
            requests_path=self.requests_path,
            requests_conn_id=self.requests_conn_id,
            model=self.model,
        )
        return with_output_schema(source, self.output_schema)

    def prepare(self) -> PreparedJob:
        """Validate the whole input and plan its batches: no API call, nothing held in memory."""
        return prepare_job(
            self.source(), max_requests=self._batch_size_limit(), max_bytes=int(self.max_bytes_per_batch)
        )

    def _batch_size_limit(self) -> int:
        """Requests per batch: ``max_requests_per_batch`` (checked by ``prepare_job``), and no more than
        may be in flight."""
        limit = int(self.max_requests_per_batch)
        if self.max_requests_in_flight is not None:  # the batch's proof request is in flight too
            limit = min(limit, self.max_requests_in_flight - PROOF_RESERVED_REQUESTS)
        return limit

    def execute(self, context: Context) -> dict[str, Any]:
        job = self.prepare()
        self.log.info(
            "Validated %d requests from %s (fingerprint %s, models %s): %d batch(es)",
            job.request_count,
            job.source.describe(),
            job.fingerprint[:16],
            job.requests_per_model,
            len(job.slices),
        )
        self._models = dict(job.requests_per_model)
        self._job = job
        store = self._store = job_store_for(context)
        self._submission = self.submission_for(context, store, job)
        record = self._proven(self._submission.run)
        self._owned_batch_ids = record.all_batch_ids
        AnthropicBatchLink.persist(context, record.all_batch_ids)
        if record.finished:
            return self._outcome(record)
        if not self.wait_for_completion:
            if unsubmitted_slices(record, 1):
                raise BatchQueueFullError(
                    f"the processing queue is full: {len(record.batch_ids)} of {len(record.slices)} batches "
                    f"were created ({', '.join(record.batch_ids) or 'none'}) and the create of the next "
                    "one was refused (HTTP 429, no batch made). Nothing is lost: the task's retry "
                    "re-attaches to those batches and creates the rest. Set retries (and retry_delay) on "
                    "the task, or wait_for_completion=True to create them as room frees up."
                )
            return self._complete(store, record, None)
        if self.redrive is not None and record.redrive is None:
            record.redrive = self.redrive.to_json()
            store.save(record)
        return self._drive(context, store, record, just_submitted=True)

    def _drive(
        self, context: Context, store: JobStore, record: JobRecord, *, just_submitted: bool = False
    ) -> dict[str, Any]:
        """Wait for the batches in flight and create the slices held back as they end
        (``max_requests_in_flight``, a full queue); with ``redrive``, then the next rounds."""
        while True:
            state = current_round(record)
            if state.ended_counts is None:
                if state.record is not None:
                    self._submit_round(context, store, record)
                elif unsubmitted_slices(record, 1) and not just_submitted:
                    self._submit_held_back(context, store, record)
                just_submitted = False
                waiting = waiting_batch_ids(record, state.number)
                if not waiting:  # every create refused for a full queue: nothing of ours to wait on
                    self._pause_for_queue(record)
                    continue
                counts = self._without_proofs(record, self._wait(store, record, waiting, state.number))
                record_batches_ended(record, state.number, counts)
                store.save(record)
                self._forget_input()
                continue
            planned = self._job_rounds().plan_next(record)
            if planned is None:
                return self._complete(store, record, None)
            record.rounds.append(planned)
            store.save(record)  # the round's intent, before any of its creates

    def _submit_held_back(self, context: Context, store: JobStore, record: JobRecord) -> None:
        """Create the first round's slices held back so far, the input read and checked again first."""
        job = self._job = self.prepare()
        check_input_unchanged(record, job, 1)
        submission = self._submission = self.submission_for(context, store, job)
        self._proven(lambda: submission.submit_held_back(record))
        self._owned_batch_ids = record.all_batch_ids
        AnthropicBatchLink.persist(context, record.all_batch_ids)

    def _pause_for_queue(self, record: JobRecord) -> None:
        """Every create was refused for a full processing queue and none of the job's batches is in
        flight: try again after ``poll_interval`` (deferred: without holding a worker slot), for up to
        ``timeout`` since the first refusal."""
        since = datetime.fromisoformat(record.queue_full_since) if record.queue_full_since else utcnow()
        waited = (utcnow() - since).total_seconds()
        if waited >= self.timeout:
            unsent = unsubmitted_slices(record, current_round(record).number)
            raise BatchQueueFullError(
                f"the processing queue stayed full for {waited:.0f} s (timeout {self.timeout:.0f} s): "
                f"{unsent} slice(s) of the job were never created "
                "and nothing was paid for them. Batches of the job so far: "
                f"{', '.join(record.all_batch_ids) or 'none'}. Retry the task when the organization's queue "
                "has room (its retry re-attaches to those batches), or set max_requests_in_flight."
            )
        pause = min(self.poll_interval, self.timeout - waited)
        self.log.info("The processing queue is full: trying the create again in %.0f s", pause)
        if self.deferrable:
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.defer(
                trigger=DateTimeTrigger(moment=utcnow() + timedelta(seconds=pause)),
                method_name="resume_submission",
                timeout=timedelta(seconds=pause + DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        time.sleep(pause)

    def _forget_input(self) -> None:
        """Time passed (a wait, a delay): the next wave or round reads the input and checks it again."""
        self._job = None
        if self._rounds is not None:
            self._rounds.forget_input()

    def _job_rounds(self) -> JobRounds:
        if self._rounds is None:
            self._rounds = JobRounds(
                self.hook,
                self.redrive,
                self.source,
                max_requests=self._batch_size_limit(),
                max_bytes=int(self.max_bytes_per_batch),
                log=self.log,
                on_external_cancel=self._on_external_cancel(),
            )
        return self._rounds

    def _submit_round(self, context: Context, store: JobStore, record: JobRecord) -> None:
        """Submit (or re-attach to) the follow-up round on record, after its delay."""
        state = current_round(record)
        assert state.record is not None
        not_before = state.record.not_before
        if not_before is not None and not state.batch_ids:
            moment = datetime.fromisoformat(not_before)
            remaining = (moment - datetime.now(moment.tzinfo)).total_seconds()
            if remaining > 0 and self.deferrable:
                from airflow.providers.standard.triggers.temporal import DateTimeTrigger

                self.defer(
                    trigger=DateTimeTrigger(moment=moment),
                    method_name="resume_submission",
                    timeout=timedelta(seconds=remaining + DEFER_TIMEOUT_MARGIN_SECONDS),
                )
            if remaining > 0:
                self.log.info("Round %d starts in %.1f s (Redrive.delay)", state.number, remaining)
                time.sleep(remaining)
                self._forget_input()
        job = self._job_rounds().job_of(record, state.number)
        submission = self._submission = self.submission_for(context, store, job)
        round_record = state.record
        self._proven(lambda: submission.run_round(record, round_record))
        self._owned_batch_ids = record.all_batch_ids
        AnthropicBatchLink.persist(context, record.all_batch_ids)

    def resume_submission(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after a pause (``Redrive.delay``, a full processing queue): submit and go on."""
        record = self._load_record(context, None, batches_needed=False)  # a full queue: maybe none yet
        store = self._store = job_store_for(context)
        return self._drive(context, store, record)

    #: The name tasks deferred by version 0.1 resume with.
    resume_redrive = resume_submission

    def _proven(self, submit: Callable[[], T]) -> T:
        """Run a submission step; while a lost create's candidates run, wait for them to end (acting
        on none of them) and run it again, so it adopts the proven one or creates the part."""
        while True:
            try:
                return submit()
            except ProofPending as pending:
                self._wait_for_candidates(pending)

    def _wait_for_candidates(self, pending: ProofPending) -> None:
        """Wait for the batches that may be a lost create's to end: deferred, in the triggerer without a
        worker slot (resumed by ``resume_after_proof``); else here. A timeout cancels nothing: none of
        them is proven the job's."""
        self.log.info(
            "A lost create of part %d may have made one of batches %s: waiting for them to end, to read "
            "from their results which one, if any, is this job's (none is adopted or canceled before)",
            pending.part + 1,
            ", ".join(pending.batch_ids),
        )
        spec = WaitSpec(time.time() + self.timeout, self.poll_interval, self.max_poll_interval)
        try:
            self._wait_on(pending.batch_ids, spec, method_name="resume_after_proof")
        except BatchTimeoutError as exc:
            raise BatchTimeoutError(_proof_timeout_message(pending.batch_ids, self.timeout)) from exc

    def _wait_on(
        self,
        batch_ids: list[str],
        spec: WaitSpec,
        *,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        cancel_on_kill: bool = False,
    ) -> dict[str, dict[str, int]]:
        """Wait as ``spec`` says: deferred to the triggerer (resuming in ``method_name``), else here."""
        if self.deferrable:
            self.defer(
                trigger=AnthropicBatchTrigger.for_wait(
                    batch_ids, spec, conn_id=self.conn_id, cancel_on_kill=cancel_on_kill
                ),
                method_name=method_name,
                kwargs=kwargs,
                timeout=timedelta(seconds=self.timeout + DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        return self.hook.wait_for_batches(batch_ids, spec, log=self.log)

    def resume_after_proof(self, context: Context, event: Any = None) -> dict[str, Any]:
        """The candidates of a lost create ended (or the wait timed out): submit again, which adopts the
        proven one or creates the part; the input is read and checked again, as a retry does."""
        wait = parse_wait_event(event)
        raise_for_wait_event(wait, timeout_message=_proof_timeout_message(wait.batch_ids, self.timeout))
        return self.execute(context)

    def _without_proofs(
        self, record: JobRecord, counts: Mapping[str, Mapping[str, int]]
    ) -> dict[str, dict[str, int]]:
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

    def _wait(
        self, store: JobStore, record: JobRecord, batch_ids: list[str], number: int
    ) -> Mapping[str, Mapping[str, int]]:
        """The ended counts of the round's batches, waited for here or (deferred) in the triggerer."""
        spec = WaitSpec(
            deadline=time.time() + self.timeout,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            not_found_grace_until=time.time() + NOT_FOUND_GRACE_SECONDS,
            progress_interval=self.progress_interval,
            label=wait_label(record, number, batch_ids),
        )
        try:
            return self._wait_on(
                batch_ids,
                spec,
                method_name="execute_complete",
                kwargs={"manifest": job_manifest(record), "round": number},
                cancel_on_kill=self.cancel_on_kill,
            )
        except (BatchTimeoutError, AirflowTaskTimeout):
            if self.cancel_on_timeout:
                self._cancel_own(store, record, batch_ids, "the task timed out")
            raise

    def submission_for(self, context: Context, store: JobStore, job: PreparedJob) -> JobSubmission:
        """The retry-safe submission of ``job`` (its ``create`` is the one paid call: tests wrap it)."""
        return JobSubmission(
            self.hook,
            store,
            job,
            log=self.log,
            cancel=lambda ids, reason: cancel_batches(self.hook, ids, reason=reason, log=self.log),
            generation=generation_of(context),
            on_input_change=self.on_input_change,
            max_requests_in_flight=self.max_requests_in_flight,
            on_external_cancel=self._on_external_cancel(),
            on_uncertain_create=self.on_uncertain_create,
            before_first_create=(lambda: self._check_models(job)) if self.check_models else None,
        )

    def _check_models(self, job: PreparedJob) -> None:
        """Each model of ``job`` looked up in the Models API (free), before the first paid create."""
        check_models(
            self.hook,
            job.model_usage,
            source=job.source.describe(),
            betas=self.hook.get_settings().betas,
            log=self.log,
        )

    def _on_external_cancel(self) -> OnExternalCancel:
        """``Redrive(include_canceled=True)`` already asks for canceled requests to be sent again."""
        if self.redrive is not None and self.redrive.include_canceled:
            return "resume"
        return self.on_external_cancel

    def _cancel_own(
        self,
        store: JobStore | None,
        record: JobRecord | None,
        batch_ids: Sequence[str],
        reason: str,
        *,
        record_within: float | None = None,
    ) -> None:
        """Cancel the job's batches, the cancel recorded first as the job's own: a retry then resumes
        their unfinished requests instead of taking them for canceled by someone else.

        ``record_within`` bounds the recording (``on_kill`` runs in a signal handler, where the store's
        channel may be held by the interrupted code): past it the cancel goes ahead unrecorded.
        """
        if not batch_ids:
            return

        def note() -> None:
            loaded = store.load() if store is not None and record is None else record
            if store is not None and loaded is not None:
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

    def execute_complete(
        self,
        context: Context,
        event: Any = None,
        manifest: Mapping[str, Any] | None = None,
        round: int | None = None,
    ) -> dict[str, Any]:
        """Resume after the trigger: check its event against the durable record (which says the round
        in flight), record the round's counts, then go on (a next round, or the outcome)."""
        store = self._store = job_store_for(context)
        record = self._load_record(context, manifest)
        if record.finished:
            return self._outcome(record)
        state = current_round(record)
        waiting = waiting_batch_ids(record, state.number)
        wait = parse_wait_event(event, expected_batch_ids=waiting if state.ended_counts is None else None)
        cancel = partial(self._cancel_own, store, record, waiting, "the task timed out")
        counts = raise_for_wait_event(wait, on_timeout=cancel if self.cancel_on_timeout else None)
        if state.ended_counts is None:
            record_batches_ended(record, state.number, self._without_proofs(record, counts))
            store.save(record)
        return self._drive(context, store, record)

    def _load_record(
        self, context: Context, manifest: Mapping[str, Any] | None, *, batches_needed: bool = True
    ) -> JobRecord:
        record = job_store_for(context).load()
        if record is None or (batches_needed and not record.batch_ids):
            raise BatchWaitError(
                "resumed without a record of the job's batches (task state deleted?); not guessing. "
                f"The batches the deferral was for: {(manifest or {}).get('batch_ids')}"
            )
        return record

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out in Airflow itself (not in the trigger) also cancels the batches."""
        error = (next_kwargs or {}).get("error")
        if next_method == "__fail__" and str(getattr(error, "value", error)) == "Trigger timeout":
            store = job_store_for(context)
            record = store.load()
            if record is not None and record.proof_pending:
                self.log.warning("The wait for a lost create's candidates timed out: nothing is canceled")
            elif record is not None and self.cancel_on_timeout:
                batch_ids = waiting_batch_ids(record, current_round(record).number)
                self._cancel_own(store, record, batch_ids, "the deferral timed out")
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The task is killed in the worker (submitting or waiting): cancel the batches it owns."""
        owned = self._submission.batch_ids if self._submission is not None else self._owned_batch_ids
        if owned and self.cancel_on_kill:
            self._cancel_own(
                self._store, None, owned, "the task was killed", record_within=KILL_RECORD_SECONDS
            )

    # -- outcome ----------------------------------------------------------------------------------

    def _complete(
        self, store: JobStore, record: JobRecord, ended_counts: Mapping[str, Mapping[str, int]] | None
    ) -> dict[str, Any]:
        """Record the job as finished (with its final counts) *before* anything else can fail, so a
        retry after this point returns the same manifest instead of paying again."""
        if ended_counts is not None:
            record.ended_counts = {batch_id: dict(counts) for batch_id, counts in ended_counts.items()}
        record.finished = True
        store.save(record)
        return self._outcome(record)

    def _outcome(self, record: JobRecord) -> dict[str, Any]:
        manifest = job_manifest(record)
        if record.ended_counts is None:
            self._completed_manifest = manifest
            return manifest
        read: list[ErrorSummary] = []

        final = final_counts(record) if record.rounds or record.redrive is not None else None

        def errors() -> str:  # read only when some request failed (the results download is free)
            rounds = [(1, record.ended_counts or {})]
            rounds += [(later.number, later.ended_counts or {}) for later in record.rounds]
            redrive = Redrive.from_json(record.redrive) if record.redrive else None
            superseded = partial(sent_again, record, redrive)
            failed = None if final is None else final.get("errored", 0) + final.get("expired", 0)
            read.append(summarize_errors(self.hook, rounds, superseded=superseded, failed=failed))
            return read[-1].describe()

        if final is not None:  # after re-drive: each request once, by its last round's answer
            self.log.info("Outcome after %d round(s):", 1 + len(record.rounds))
        totals = check_outcome(
            {"job": final} if final is not None else record.ended_counts,
            fail_on_partial_error=self.fail_on_partial_error,
            max_error_rate=self.max_error_rate,
            log=self.log,
            errors=errors,
        )
        self._completed_manifest = {**manifest, "request_counts": totals}
        if read:
            self._completed_manifest["errors"] = read[-1].to_json()
        return self._completed_manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the requests file in, the batches out, models and counts (None without it)."""
        models = self._models
        if not models and self._completed_manifest and self.model:  # resumed: the input was not re-read
            models = {self.model: self._completed_manifest["request_count"]}
        return create_batch_lineage(
            requests_path=self.requests_path, models=models, manifest=self._completed_manifest
        )


def _proof_timeout_message(batch_ids: Sequence[str], timeout: float) -> str:
    return (
        f"A create of this job lost its answer, and batches {', '.join(batch_ids)} (of its size, "
        f"made since) did not end within timeout={timeout:.0f} s; only their results can prove whether one "
        "of them is this job's. None of them was adopted or canceled, and nothing more was paid. Do not "
        "cancel them: they may be other jobs'. Retry the task: it goes on waiting for them (or set a "
        "longer timeout)."
    )
