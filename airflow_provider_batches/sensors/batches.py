"""AnthropicBatchSensor: waits for batches created elsewhere (poke, reschedule or deferrable).

By default it only watches: it does not cancel a batch on timeout or on kill, because it does not
own it. ``cancel_on_timeout`` / ``cancel_on_kill`` make it cancel when it is the batches' owner.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_batches._compat import AirflowSensorTimeout
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.failures import summarize_errors
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.links import AnthropicBatchLink
from airflow_provider_batches.operators.cancel_delete import cancel_batches
from airflow_provider_batches.policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_PROGRESS_INTERVAL,
    WaitSpec,
    check_max_error_rate,
    check_outcome,
    default_deferrable,
    parse_wait_event,
    raise_for_wait_event,
)
from airflow_provider_batches.proof import counts_without_proofs, manifest_proofs
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from airflow_provider_batches.waiting import (
    DEFER_TIMEOUT_MARGIN_SECONDS,
    NOT_FOUND_GRACE_SECONDS,
    WaitProgress,
    poll_round,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class AnthropicBatchSensor(BaseSensorOperator):
    """Wait until every given batch has ended, then apply the outcome policy.

    All canceled skips the task; errored or expired requests log a warning, or fail the task with
    ``fail_on_partial_error``. Returns ``{"batch_ids": [...], "request_counts": {...}}``.

    :param batch_id: a batch id, a list of ids, or the create operator's manifest (``create.output``).
    :param conn_id: the Anthropic connection.
    :param deferrable: wait in the triggerer (``poke_interval`` is then the first poll interval,
        backing off toward ``max_poll_interval``).
    :param fail_on_partial_error: fail when any request ended errored or expired.
    :param max_error_rate: the share of requests (0 to 1) that may end errored or expired before the
        task fails (default None: it fails only when none succeeded).
    :param max_poll_interval: the cap of the deferred poll interval.
    :param cancel_on_kill: cancel the batches when the task is killed (default False: not its batches).
    :param cancel_on_timeout: cancel the batches when the sensor times out (default False).
    :param progress_interval: seconds between the progress lines logged while waiting (counts per
        state, elapsed time), from the pokes' own answers; 0 for none.

    A 404 within a minute of the first poke counts as transient: the API has been seen to answer
    it for a batch seconds after its create.
    """

    template_fields: Sequence[str] = ("batch_id", "conn_id")
    operator_extra_links = (AnthropicBatchLink(),)

    def __init__(
        self,
        *,
        batch_id: Any,
        conn_id: str = AnthropicHook.default_conn_name,
        deferrable: bool | None = None,
        fail_on_partial_error: bool = False,
        max_error_rate: float | None = None,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        poke_interval: timedelta | float = 60,
        cancel_on_kill: bool = False,
        cancel_on_timeout: bool = False,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.fail_on_partial_error = fail_on_partial_error
        self.max_error_rate = check_max_error_rate(max_error_rate, task_id=self.task_id)
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self._started_at: float | None = None
        self.progress_interval = float(progress_interval)
        self._progress: WaitProgress | None = None

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(self.conn_id)

    def execute(self, context: Context) -> Any:
        batch_ids = normalize_batch_ids(self.batch_id)
        AnthropicBatchLink.persist(context, batch_ids)
        self._started_at = time.time()
        if self.deferrable:
            self.defer(
                trigger=AnthropicBatchTrigger.for_wait(
                    batch_ids,
                    WaitSpec(
                        deadline=time.time() + self.timeout,
                        poll_interval=max(self.poke_interval, 1.0),
                        max_poll_interval=self.max_poll_interval,
                        not_found_grace_until=time.time() + NOT_FOUND_GRACE_SECONDS,
                        progress_interval=self.progress_interval,
                    ),
                    conn_id=self.conn_id,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout + DEFER_TIMEOUT_MARGIN_SECONDS),
            )
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            self._cancel_on_timeout(batch_ids)
            raise

    def poke(self, context: Context) -> bool | PokeReturnValue:
        batch_ids = normalize_batch_ids(self.batch_id)
        grace_until = self._grace_until(context)
        if self._progress is None:  # per sensor instance: one per poke in reschedule mode
            started = grace_until - NOT_FOUND_GRACE_SECONDS
            self._progress = WaitProgress(
                batch_ids, progress_interval=self.progress_interval, started=started
            )
        progress = self._progress
        round_plan = partial(
            poll_round,
            batch_ids=batch_ids,
            not_found_grace_until=grace_until,
            log=self.log,
            progress=progress,
        )
        ended, _ = self.hook.run_plan(round_plan, budget=True)
        if len(ended) < len(batch_ids):
            progress.report_if_due(self.log, time.time())
            return False
        progress.ended.update(ended)
        self.log.info("%s", progress.describe(time.time(), ended=True))
        totals = self._judge(self._users(ended))
        return PokeReturnValue(is_done=True, xcom_value={"batch_ids": batch_ids, "request_counts": totals})

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: check its event, then apply the outcome policy."""
        batch_ids = normalize_batch_ids(self.batch_id)
        wait = parse_wait_event(event, expected_batch_ids=batch_ids)
        counts = raise_for_wait_event(
            wait, on_timeout=partial(self._cancel_on_timeout, batch_ids), timeout_error=AirflowSensorTimeout
        )
        totals = self._judge(self._users(counts))
        return {"batch_ids": batch_ids, "request_counts": totals}

    def _judge(self, ended: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
        """The outcome policy, naming the top error types read from the results when some failed."""
        return check_outcome(
            ended,
            fail_on_partial_error=self.fail_on_partial_error,
            max_error_rate=self.max_error_rate,
            log=self.log,
            errors=lambda: summarize_errors(self.hook, [(1, ended)]).describe(),
        )

    def _users(self, counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        """The counts less the proof requests a create operator's manifest names (not the user's)."""
        return counts_without_proofs(counts, manifest_proofs(self.batch_id), self.hook.iter_results_bytes, {})

    def on_kill(self) -> None:
        if self.cancel_on_kill:
            batch_ids = normalize_batch_ids(self.batch_id)
            cancel_batches(self.hook, batch_ids, reason="the sensor was killed", log=self.log)

    def _cancel_on_timeout(self, batch_ids: Sequence[str]) -> None:
        if self.cancel_on_timeout:
            cancel_batches(self.hook, batch_ids, reason="the sensor timed out", log=self.log)

    def _grace_until(self, context: Context) -> float:
        """404s are tolerated for a minute from the first poke (of the first reschedule, if any)."""
        started = self._started_at or time.time()
        if self.reschedule:
            first = context["ti"].get_first_reschedule_date(context)
            if first is not None:
                started = first.timestamp()
        return started + NOT_FOUND_GRACE_SECONDS
