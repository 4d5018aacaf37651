"""Operators that create, cancel and delete Message Batches.

``AnthropicCreateBatchOperator`` validates and streams the input, splits it into as many batches as
the API limits require, records what it submits in durable per-task state (so a retry re-attaches
instead of paying twice), then waits in the worker or, deferred, in the triggerer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_batches._compat import AirflowSkipException, AirflowTaskTimeout, conf
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.client_core import CREATE_LOOKBACK
from airflow_provider_batches.errors import (
    BatchCreateUncertainError,
    BatchNotReadyError,
    BatchOutcomeError,
    BatchTimeoutError,
    BatchWaitError,
    InvalidRequestError,
    NotFoundError,
)
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import JobRecord, JobStore, SliceRecord, job_store_for, utcnow
from airflow_provider_batches.links import AnthropicBatchLink
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.requests import (
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    BatchSlice,
    PreparedJob,
    RequestSource,
    prepare_job,
)
from airflow_provider_batches.structured_output import OutputSchema, StructuredOutput, with_output_schema
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger, parse_wait_event
from airflow_provider_batches.waiting import COUNT_FIELDS, NOT_FOUND_GRACE_SECONDS, wait_plan
from airflow_provider_batches.waiting import run_sync as run_wait_sync

if TYPE_CHECKING:
    from logging import Logger

    from airflow.sdk import Context

DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
DEFAULT_TIMEOUT = 24 * 60 * 60.0
#: The deferral's own timeout lies this far past the trigger's deadline, so the trigger's clean
#: timeout event (which cancels the batches) normally comes first.
DEFER_TIMEOUT_MARGIN_SECONDS = 600.0


def default_deferrable() -> bool:
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


# -- outcomes -------------------------------------------------------------------------------------


def total_counts(request_counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Request counts of every batch, added up."""
    return {
        name: sum(int(counts.get(name, 0)) for counts in request_counts.values()) for name in COUNT_FIELDS
    }


def describe_counts(totals: Mapping[str, int], batch_count: int) -> str:
    total = sum(totals.values())
    parts = ", ".join(f"{totals[name]} {name}" for name in COUNT_FIELDS if name != "processing")
    return f"{parts} of {total} requests in {batch_count} batch(es)"


def check_outcome(
    request_counts: Mapping[str, Mapping[str, int]], *, fail_on_partial_error: bool, log: Logger
) -> dict[str, int]:
    """Apply the outcome policy to ended batches: all canceled skips, errored/expired warn or fail."""
    totals = total_counts(request_counts)
    summary = describe_counts(totals, len(request_counts))
    if totals["canceled"] and totals["canceled"] == sum(totals.values()):
        raise AirflowSkipException(f"Every request was canceled: {summary}")
    if totals["errored"] or totals["expired"]:
        if fail_on_partial_error:
            raise BatchOutcomeError(f"Some requests did not succeed: {summary}")
        log.warning("Some requests did not succeed: %s", summary)
    elif totals["canceled"]:
        log.warning("Some requests were canceled: %s", summary)
    else:
        log.info("Every request succeeded: %s", summary)
    return totals


# -- waiting in the worker ------------------------------------------------------------------------


def wait_for_batches(
    hook: AnthropicHook,
    batch_ids: Sequence[str],
    *,
    deadline: float,
    poll_interval: float,
    max_poll_interval: float,
    not_found_grace_until: float | None,
    log: Logger,
) -> dict[str, dict[str, int]]:
    """Block until every batch has ended (what AnthropicBatchTrigger does, in the worker); final counts."""
    plan = wait_plan(
        batch_ids,
        deadline=deadline,
        poll_interval=poll_interval,
        max_poll_interval=max_poll_interval,
        not_found_grace_until=not_found_grace_until,
        log=log,
    )
    event = run_wait_sync(plan, hook)
    if event.status == "timeout":
        raise BatchTimeoutError(event.message)
    if event.status == "error":
        raise BatchWaitError(event.message)
    return event.request_counts


def cancel_batches(hook: AnthropicHook, batch_ids: Sequence[str], *, reason: str, log: Logger) -> None:
    """Best effort: cancel each batch still in progress (the task is failing anyway)."""
    log.warning("Canceling batch(es) %s: %s", ", ".join(batch_ids), reason)
    for batch_id in batch_ids:
        try:
            cancel_if_running(hook, batch_id, log=log)
        except Exception as exc:
            log.warning("Could not cancel batch %s (%s): %s", batch_id, reason, exc)


# -- create ---------------------------------------------------------------------------------------


def _manifest(batch_ids: Sequence[str], request_count: int, fingerprint: str) -> dict[str, Any]:
    """What the create operator returns: small, and accepted by every ``batch_id`` argument."""
    return {"batch_ids": list(batch_ids), "request_count": request_count, "fingerprint": fingerprint}


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
    :param fail_on_partial_error: fail when any request ended errored or expired (else a warning).
    :param max_requests_per_batch: split the input into batches of at most this many requests.
    :param max_bytes_per_batch: ... and at most this many body bytes.
    :param output_schema: a Pydantic model class or JSON schema every answer must follow: put into
        each request (``output_config.format``, or a forced tool call on older models) before validation.
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
        max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH,
        max_bytes_per_batch: int = MAX_BATCH_BYTES,
        output_schema: OutputSchema | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_schema = None if output_schema is None else StructuredOutput.of(output_schema)
        if (requests is None) == (requests_path is None):
            raise ValueError(f"{self.task_id}: pass exactly one of requests=[...] or requests_path='...'")
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
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self._owned_batch_ids: list[str] = []

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(self.conn_id)

    def prepare(self) -> PreparedJob:
        """Validate the whole input and plan its batches: no API call, nothing held in memory."""
        source = RequestSource(
            requests=self.requests,
            requests_path=self.requests_path,
            requests_conn_id=self.requests_conn_id,
            model=self.model,
        )
        source = with_output_schema(source, self.output_schema)
        return prepare_job(
            source, max_requests=int(self.max_requests_per_batch), max_bytes=int(self.max_bytes_per_batch)
        )

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
        store = job_store_for(context)
        record = self._submit(store, job)
        batch_ids = record.batch_ids
        self._owned_batch_ids = batch_ids
        AnthropicBatchLink.persist(context, batch_ids)
        manifest = _manifest(batch_ids, job.request_count, job.fingerprint)
        if not self.wait_for_completion:
            store.finish(record)
            return manifest
        deadline = time.time() + self.timeout
        grace_until = time.time() + NOT_FOUND_GRACE_SECONDS
        if self.deferrable:
            self.defer(
                trigger=AnthropicBatchTrigger(
                    batch_ids=batch_ids,
                    conn_id=self.conn_id,
                    deadline=deadline,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    not_found_grace_until=grace_until,
                    cancel_on_kill=True,
                ),
                method_name="execute_complete",
                kwargs={"manifest": manifest},
                timeout=timedelta(seconds=self.timeout + DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        try:
            counts = wait_for_batches(
                self.hook,
                batch_ids,
                deadline=deadline,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                not_found_grace_until=grace_until,
                log=self.log,
            )
        except (BatchTimeoutError, AirflowTaskTimeout):
            cancel_batches(self.hook, batch_ids, reason="the task timed out", log=self.log)
            raise
        return self._finish(store, record, manifest, counts)

    def execute_complete(
        self, context: Context, event: Any = None, manifest: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger: check its event, then apply the outcome policy.

        The job is read back from the durable record (``manifest``, passed at deferral, is only a
        fallback: ``airflow dags test`` drops it on resume).
        """
        store = job_store_for(context)
        record = store.load()
        if record is not None and record.batch_ids:
            manifest = _manifest(record.batch_ids, record.request_count, record.fingerprint)
        elif not isinstance(manifest, Mapping) or "batch_ids" not in manifest:
            raise BatchWaitError("resumed without a record of the job's batches (task state cleared?)")
        batch_ids = normalize_batch_ids(manifest)
        wait = parse_wait_event(event, expected_batch_ids=batch_ids)
        if wait.status == "timeout":
            cancel_batches(self.hook, batch_ids, reason="the task timed out", log=self.log)
            raise BatchTimeoutError(wait.message)
        if wait.status == "error":
            raise BatchWaitError(wait.message)
        return self._finish(store, record, dict(manifest), wait.request_counts)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that timed out in Airflow itself (not in the trigger) also cancels the batches."""
        error = (next_kwargs or {}).get("error")
        if next_method == "__fail__" and str(getattr(error, "value", error)) == "Trigger timeout":
            record = job_store_for(context).load()
            if record is not None:
                cancel_batches(self.hook, record.batch_ids, reason="the deferral timed out", log=self.log)
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The task is killed while waiting in the worker: cancel the batches it owns."""
        if self._owned_batch_ids:
            cancel_batches(self.hook, self._owned_batch_ids, reason="the task was killed", log=self.log)

    # -- outcome ----------------------------------------------------------------------------------

    def _finish(
        self,
        store: JobStore,
        record: JobRecord | None,
        manifest: dict[str, Any],
        request_counts: Mapping[str, Mapping[str, int]],
    ) -> dict[str, Any]:
        totals = check_outcome(request_counts, fail_on_partial_error=self.fail_on_partial_error, log=self.log)
        if record is not None:
            store.finish(record)
        return {**manifest, "request_counts": totals}

    # -- retry-safe submission --------------------------------------------------------------------

    def _submit(self, store: JobStore, job: PreparedJob) -> JobRecord:
        """Create the job's missing batches, recording intent and ids, re-attaching to recorded ones."""
        record = self._record_for(store, job)
        for part, entry in zip(job.slices, record.slices, strict=True):
            if entry.batch_id and self._reattach(entry):
                continue
            if entry.intent_at and not entry.batch_id:
                entry.batch_id = self._find_orphan(entry, exclude=record.batch_ids)
                if entry.batch_id:
                    store.save(record)
                    continue
            entry.batch_id = None
            entry.intent_at = utcnow().isoformat()
            store.save(record)  # the intent, before the paid call
            batch = self._create_slice(job, part)
            entry.batch_id = batch.id
            store.save(record)  # the id, right after
            self._owned_batch_ids = record.batch_ids
            self.log.info(
                "Created batch %s (%d of %d, %d requests)",
                batch.id,
                part.index + 1,
                len(job.slices),
                part.count,
            )
        return record

    def _record_for(self, store: JobStore, job: PreparedJob) -> JobRecord:
        """The earlier tries' record of this same input, or a fresh one."""
        record = store.load()
        if record is None:
            return JobRecord.for_job(job)
        if record.finished:
            self.log.info(
                "An earlier try finished batch(es) %s; submitting the input afresh", record.batch_ids
            )
            return JobRecord.for_job(job)
        if not record.matches(job):
            self.log.warning(
                "The input changed since an earlier try submitted batch(es) %s (fingerprint %s, now %s): "
                "submitting it afresh and leaving those batches alone",
                record.batch_ids,
                record.fingerprint[:16],
                job.fingerprint[:16],
            )
            return JobRecord.for_job(job)
        self.log.info("Resuming the job an earlier try started (batches on record: %s)", record.batch_ids)
        return record

    def _reattach(self, entry: SliceRecord) -> bool:
        """Whether the recorded batch can be waited on (it was not canceled, nor deleted)."""
        assert entry.batch_id is not None
        try:
            batch = self.hook.get_batch(entry.batch_id)
        except NotFoundError as exc:
            intent = entry.intent_time
            if intent is not None and (utcnow() - intent).total_seconds() < NOT_FOUND_GRACE_SECONDS:
                return True  # a fresh batch can answer 404 for a few seconds
            raise BatchWaitError(
                f"batch {entry.batch_id}, created by an earlier try, is not found (deleted?); "
                "not resubmitting it on a guess. Delete the task's 'anthropic_batch_job' state to resubmit."
            ) from exc
        if batch.cancel_initiated_at is not None:
            self.log.warning(
                "Batch %s of an earlier try was canceled: submitting its requests again", batch.id
            )
            return False
        self.log.info("Re-attached to batch %s (%s)", batch.id, batch.processing_status)
        return True

    def _find_orphan(self, entry: SliceRecord, *, exclude: Sequence[str]) -> str | None:
        """The batch a try made but did not live to record: found by size within the create's window."""
        intent = entry.intent_time
        assert intent is not None
        settings = self.hook.get_settings()
        call_budget = (settings.timeout + settings.connect_timeout) * (settings.max_retries + 1)
        latest = intent + timedelta(seconds=call_budget + settings.max_retry_wait) + CREATE_LOOKBACK
        recent = self.hook.find_recent_batches(
            created_after=intent - CREATE_LOOKBACK, request_count=entry.count, sent_at=intent
        )
        candidates = [
            batch.id
            for batch in recent
            if batch.id not in exclude and batch.cancel_initiated_at is None and batch.created_at <= latest
        ]
        if len(candidates) == 1:
            self.log.warning(
                "An earlier try sent a create at %s and did not record its answer: adopting batch %s, "
                "the one batch of %d requests created since",
                entry.intent_at,
                candidates[0],
                entry.count,
            )
            return candidates[0]
        if candidates:
            raise BatchCreateUncertainError(
                f"An earlier try sent a create at {entry.intent_at} and did not record its answer; "
                f"{len(candidates)} batches of {entry.count} requests were created since: "
                f"{', '.join(candidates)}. Cancel the ones that are not this task's in the Anthropic "
                "console, then retry: the one left is adopted.",
                candidates,
            )
        self.log.info(
            "An earlier try sent a create at %s but no batch of %d requests was made since: creating it",
            entry.intent_at,
            entry.count,
        )
        return None

    def _create_slice(self, job: PreparedJob, part: BatchSlice) -> MessageBatch:
        """The paid call: one batch, its body streamed from the source."""
        return self.hook.create_batch(job.body(part))


# -- cancel and delete ----------------------------------------------------------------------------


class _ExistingBatchesOperator(BaseOperator):
    """Shared by the operators that act on batches which already exist: ids, connection, waiting."""

    template_fields: Sequence[str] = ("batch_id", "conn_id")

    def __init__(
        self,
        *,
        batch_id: Any,
        conn_id: str = AnthropicHook.default_conn_name,
        poll_interval: float = 10.0,
        timeout: float = 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(self.conn_id)

    def _wait_until_ended(self, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        return wait_for_batches(
            self.hook,
            batch_ids,
            deadline=time.time() + self.timeout,
            poll_interval=self.poll_interval,
            max_poll_interval=self.poll_interval,
            not_found_grace_until=None,
            log=self.log,
        )


class AnthropicCancelBatchOperator(_ExistingBatchesOperator):
    """Cancel batches. Idempotent: a batch already canceling, ended or deleted is left as it is.

    :param batch_id: a batch id, a list of ids, or the create operator's manifest (``create.output``).
    :param conn_id: the Anthropic connection.
    :param wait_for_completion: wait until the canceled batches have ended (in-flight requests finish).
    :param poll_interval: seconds between polls while waiting.
    :param timeout: seconds to wait.
    """

    operator_extra_links = (AnthropicBatchLink(),)

    def __init__(self, *, batch_id: Any, wait_for_completion: bool = False, **kwargs: Any) -> None:
        super().__init__(batch_id=batch_id, **kwargs)
        self.wait_for_completion = wait_for_completion

    def execute(self, context: Context) -> dict[str, Any]:
        batch_ids = normalize_batch_ids(self.batch_id)
        AnthropicBatchLink.persist(context, batch_ids)
        present = [batch_id for batch_id in batch_ids if cancel_if_running(self.hook, batch_id, log=self.log)]
        manifest: dict[str, Any] = {"batch_ids": batch_ids}
        if self.wait_for_completion and present:
            manifest["request_counts"] = total_counts(self._wait_until_ended(present))
        return manifest


def cancel_if_running(hook: AnthropicHook, batch_id: str, *, log: Logger) -> bool:
    """Cancel one batch unless it is canceling or ended already; False when it no longer exists."""
    try:
        batch = hook.get_batch(batch_id)
    except NotFoundError:
        log.info("Batch %s is not found: already deleted (or not in this connection's workspace)", batch_id)
        return False
    if batch.is_ended:
        log.info("Batch %s has already ended: nothing to cancel", batch_id)
        return True
    if batch.cancel_initiated_at is not None:
        log.info("Batch %s is already canceling", batch_id)
        return True
    try:
        hook.cancel_batch(batch_id)
    except InvalidRequestError:
        if not hook.get_batch(batch_id).is_ended:
            raise
        log.info("Batch %s ended while it was being canceled", batch_id)
        return True
    log.info("Canceled batch %s", batch_id)
    return True


class AnthropicDeleteBatchOperator(_ExistingBatchesOperator):
    """Delete ended batches (and their results). Idempotent: an already deleted batch is success.

    :param batch_id: a batch id, a list of ids, or the create operator's manifest (``create.output``).
    :param conn_id: the Anthropic connection.
    :param cancel_if_running: cancel a batch still in progress and wait for it to end, then delete it;
        otherwise such a batch fails the task (the API deletes only ended batches).
    :param poll_interval: seconds between polls while a canceled batch winds down.
    :param timeout: seconds to wait for it.
    """

    def __init__(self, *, batch_id: Any, cancel_if_running: bool = False, **kwargs: Any) -> None:
        super().__init__(batch_id=batch_id, **kwargs)
        self.cancel_if_running = cancel_if_running

    def execute(self, context: Context) -> dict[str, Any]:
        batch_ids = normalize_batch_ids(self.batch_id)
        running = [batch_id for batch_id in batch_ids if self._is_running(batch_id)]
        if running and not self.cancel_if_running:
            raise BatchNotReadyError(
                f"batch(es) {', '.join(running)} have not ended; the API deletes only ended batches. "
                "Pass cancel_if_running=True to cancel them first, or wait for them (AnthropicBatchSensor)."
            )
        present = [batch_id for batch_id in running if cancel_if_running(self.hook, batch_id, log=self.log)]
        if present:
            self._wait_until_ended(present)
        deleted = []
        for batch_id in batch_ids:
            try:
                self.hook.delete_batch(batch_id)
            except NotFoundError:
                self.log.info("Batch %s is not found: already deleted", batch_id)
                continue
            deleted.append(batch_id)
            self.log.info("Deleted batch %s", batch_id)
        return {"batch_ids": batch_ids, "deleted": deleted}

    def _is_running(self, batch_id: str) -> bool:
        try:
            return not self.hook.get_batch(batch_id).is_ended
        except NotFoundError:
            return False
