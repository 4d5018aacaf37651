"""The operator that creates Message Batches: its Airflow face (cancel and delete: :mod:`.cancel_delete`).

``AnthropicCreateBatchOperator`` validates and streams the input, splits it into as many batches as
the API limits require, and hands the job to its :class:`~.drive.JobDrive`, which records what it
submits in durable per-task state (so a retry re-attaches instead of paying twice) and drives the
job's rounds to the end; this module holds the parameters, templating, waiting here or deferring to
the triggerer, the methods a deferred task resumes in, ``on_kill`` and the returned manifest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_batches import policy, waiting
from airflow_provider_batches._compat import moved_names, warn_deprecated
from airflow_provider_batches.errors import BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import JobRecord, generation_of, job_store_for, utcnow
from airflow_provider_batches.lineage import create_batch_lineage
from airflow_provider_batches.links import AnthropicBatchLink
from airflow_provider_batches.model_check import check_models
from airflow_provider_batches.operators import cancel_delete
from airflow_provider_batches.operators.cancel_delete import (
    AnthropicCancelBatchOperator,
    AnthropicDeleteBatchOperator,
)
from airflow_provider_batches.operators.drive import DriveOptions, JobDrive, proof_timeout_message
from airflow_provider_batches.operators.rounds import ON_EXTERNAL_CANCEL_CHOICES, JobRounds, OnExternalCancel
from airflow_provider_batches.operators.submission import (
    ON_INPUT_CHANGE_CHOICES,
    ON_UNCERTAIN_CREATE_CHOICES,
    JobSubmission,
    OnInputChange,
    OnUncertainCreate,
)
from airflow_provider_batches.policy import (
    WaitSpec,
    check_max_error_rate,
    parse_wait_event,
    raise_for_wait_event,
)
from airflow_provider_batches.prompts import build_prompt_requests
from airflow_provider_batches.proof import PROOF_RESERVED_REQUESTS
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

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_batches.job_state import JobStore

#: The cancel and delete operators are also published here, their first home (the README's path).
__all__ = ["AnthropicCancelBatchOperator", "AnthropicCreateBatchOperator", "AnthropicDeleteBatchOperator"]

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(
    __name__,
    {
        "cancel_batches": "airflow_provider_batches.operators.cancel_delete",
        "cancel_if_running": "airflow_provider_batches.operators.cancel_delete",
        "check_outcome": "airflow_provider_batches.policy",
        "default_deferrable": "airflow_provider_batches.policy",
        "describe_counts": "airflow_provider_batches.policy",
        "total_counts": "airflow_provider_batches.policy",
        "DEFAULT_MAX_POLL_INTERVAL": "airflow_provider_batches.policy",
        "DEFAULT_POLL_INTERVAL": "airflow_provider_batches.policy",
        "DEFAULT_TIMEOUT": "airflow_provider_batches.waiting",
        "DEFER_TIMEOUT_MARGIN_SECONDS": "airflow_provider_batches.waiting",
        "wait_for_batches": "airflow_provider_batches.waiting",
        "job_manifest": "airflow_provider_batches.operators.manifest",
        # imported here before the drive moved out, and so importable from here
        "BatchQueueFullError": "airflow_provider_batches.errors",
        "BatchTimeoutError": "airflow_provider_batches.errors",
        "DEFAULT_PROGRESS_INTERVAL": "airflow_provider_batches.policy",
    },
)

#: How long ``on_kill`` waits to record its cancel as the job's own before canceling unrecorded.
KILL_RECORD_SECONDS = 5.0


def _check_choice(task_id: str, name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{task_id}: {name} must be one of {', '.join(choices)}, got {value!r}")


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
        poll_interval: float = policy.DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = policy.DEFAULT_MAX_POLL_INTERVAL,
        timeout: float = waiting.DEFAULT_TIMEOUT,
        fail_on_partial_error: bool = False,
        max_error_rate: float | None = None,
        check_models: bool = True,
        progress_interval: float = policy.DEFAULT_PROGRESS_INTERVAL,
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
        _check_choice(self.task_id, "on_uncertain_create", on_uncertain_create, ON_UNCERTAIN_CREATE_CHOICES)
        _check_choice(self.task_id, "on_input_change", on_input_change, ON_INPUT_CHANGE_CHOICES)
        _check_choice(self.task_id, "on_external_cancel", on_external_cancel, ON_EXTERNAL_CANCEL_CHOICES)
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
        self.deferrable = policy.default_deferrable() if deferrable is None else deferrable
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
        self._drive: JobDrive | None = None
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

    # -- running: a try, and the methods a deferred task resumes in -------------------------------

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
        drive = self._drive_for(context)
        record = drive.start(job)
        if record.finished:
            return self._returned(drive.outcome(record))
        if not self.wait_for_completion:
            return self._returned(drive.complete_without_waiting(record))
        return self._returned(drive.run(record))

    def execute_complete(
        self,
        context: Context,
        event: Any = None,
        manifest: Mapping[str, Any] | None = None,
        round: int | None = None,
    ) -> dict[str, Any]:
        """Resume after the trigger: its event is checked against the durable record (which says the
        round in flight) and the round's counts recorded; then the job goes on (a next wave or round,
        or the outcome)."""
        drive = self._drive_for(context)
        record = self._load_record(drive.store, manifest)
        if record.finished:
            return self._returned(drive.outcome(record))
        return self._returned(drive.resume_after_wait(record, event))

    def resume_submission(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after a pause (``Redrive.delay``, a full processing queue): submit and go on."""
        drive = self._drive_for(context)
        record = self._load_record(drive.store, None, batches_needed=False)  # a full queue: maybe none yet
        return self._returned(drive.run(record))

    def resume_redrive(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Deprecated: the method a task deferred for ``Redrive.delay`` resumed in before it was named
        :meth:`resume_submission` (a trigger serialized then still names it); goes on as that does."""
        warn_deprecated(f"{type(self).__name__}.resume_redrive", "resume_submission")
        return self.resume_submission(context, event)

    def resume_after_proof(self, context: Context, event: Any = None) -> dict[str, Any]:
        """The candidates of a lost create ended (or the wait timed out): submit again, which adopts the
        proven one or creates the part; the input is read and checked again, as a retry does."""
        wait = parse_wait_event(event)
        raise_for_wait_event(wait, timeout_message=proof_timeout_message(wait.batch_ids, self.timeout))
        return self.execute(context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out in Airflow itself (not in the trigger) also cancels the batches."""
        error = (next_kwargs or {}).get("error")
        if next_method == "__fail__" and str(getattr(error, "value", error)) == "Trigger timeout":
            drive = self._drive_for(context)
            record = drive.store.load()
            if record is not None and record.proof_pending:
                self.log.warning("The wait for a lost create's candidates timed out: nothing is canceled")
            elif record is not None and self.cancel_on_timeout:
                drive.cancel_own(record, record.current.waiting_batch_ids, "the deferral timed out")
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The task is killed in the worker (submitting or waiting): cancel the batches it owns."""
        drive = self._drive
        if drive is not None and drive.owned_batch_ids and self.cancel_on_kill:
            drive.cancel_own(
                None, drive.owned_batch_ids, "the task was killed", record_within=KILL_RECORD_SECONDS
            )

    def _returned(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The manifest returned (to XCom), kept for OpenLineage."""
        self._completed_manifest = manifest
        return manifest

    def _load_record(
        self, store: JobStore, manifest: Mapping[str, Any] | None, *, batches_needed: bool = True
    ) -> JobRecord:
        record = store.load()
        if record is None or (batches_needed and not record.all_batch_ids):
            raise BatchWaitError(
                "resumed without a record of the job's batches (task state deleted?); not guessing. "
                f"The batches the deferral was for: {(manifest or {}).get('batch_ids')}"
            )
        return record

    # -- the job's drive, and how it waits (the drive's JobTask) ----------------------------------

    def _drive_for(self, context: Context) -> JobDrive:
        store = job_store_for(context)
        self._drive = JobDrive(
            self.hook,
            store,
            self,
            DriveOptions(
                timeout=self.timeout,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                progress_interval=self.progress_interval,
                cancel_on_timeout=self.cancel_on_timeout,
                fail_on_partial_error=self.fail_on_partial_error,
                max_error_rate=self.max_error_rate,
            ),
            rounds=JobRounds(
                self.hook,
                self.redrive,
                self.source,
                max_requests=self._batch_size_limit(),
                max_bytes=int(self.max_bytes_per_batch),
                log=self.log,
                on_external_cancel=self._on_external_cancel(),
            ),
            submission_for=partial(self.submission_for, context, store),
            on_created=partial(AnthropicBatchLink.persist, context),
            log=self.log,
        )
        return self._drive

    def submission_for(self, context: Context, store: JobStore, job: PreparedJob) -> JobSubmission:
        """The retry-safe submission of ``job`` (its ``create`` is the one paid call: tests wrap it)."""
        return JobSubmission(
            self.hook,
            store,
            job,
            log=self.log,
            cancel=lambda ids, reason: cancel_delete.cancel_batches(
                self.hook, ids, reason=reason, log=self.log
            ),
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

    def wait_for_round(
        self, batch_ids: list[str], spec: WaitSpec, manifest: dict[str, Any], number: int
    ) -> dict[str, dict[str, int]]:
        return self._wait_on(
            batch_ids,
            spec,
            method_name="execute_complete",
            kwargs={"manifest": manifest, "round": number},
            cancel_on_kill=self.cancel_on_kill,
        )

    def wait_for_candidates(self, batch_ids: list[str], spec: WaitSpec) -> object:
        return self._wait_on(batch_ids, spec, method_name="resume_after_proof")

    def pause(self, until: datetime) -> None:
        remaining = max(0.0, (until - utcnow()).total_seconds())
        if self.deferrable:
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.defer(
                trigger=DateTimeTrigger(moment=until),
                method_name="resume_submission",
                timeout=timedelta(seconds=remaining + waiting.DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        time.sleep(remaining)

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
                timeout=timedelta(seconds=self.timeout + waiting.DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        return self.hook.wait_for_batches(batch_ids, spec, log=self.log)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the requests file in, the batches out, models and counts (None without it)."""
        models = self._models
        if not models and self._completed_manifest and self.model:  # resumed: the input was not re-read
            models = {self.model: self._completed_manifest["request_count"]}
        return create_batch_lineage(
            requests_path=self.requests_path, models=models, manifest=self._completed_manifest
        )
