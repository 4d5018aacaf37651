"""Operators that act on batches which already exist: cancel and delete. Both are idempotent.

``cancel_if_running`` and ``cancel_batches`` are also how the create operator cancels the batches
it owns when it times out or is killed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_batches._compat import moved_names
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.errors import BatchNotReadyError, InvalidRequestError, NotFoundError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.links import AnthropicBatchLink
from airflow_provider_batches.policy import WaitSpec, total_counts

if TYPE_CHECKING:
    from logging import Logger

    from airflow.sdk import Context

__all__ = [
    "AnthropicCancelBatchOperator",
    "AnthropicDeleteBatchOperator",
    "cancel_batches",
    "cancel_if_running",
]

#: Names imported here before the wait moved to the hook: importing them from here still works, warned.
__getattr__ = moved_names(__name__, {"wait_for_batches": "airflow_provider_batches.waiting"})


# -- cancel ---------------------------------------------------------------------------------------


def cancel_batches(hook: AnthropicHook, batch_ids: Sequence[str], *, reason: str, log: Logger) -> None:
    """Best effort: cancel each batch still in progress (the task is failing anyway)."""
    log.warning("Canceling batch(es) %s: %s", ", ".join(batch_ids), reason)
    for batch_id in batch_ids:
        try:
            cancel_if_running(hook, batch_id, log=log)
        except Exception as exc:
            log.warning("Could not cancel batch %s (%s): %s", batch_id, reason, exc)


# -- operators ------------------------------------------------------------------------------------


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
        spec = WaitSpec(time.time() + self.timeout, self.poll_interval, self.poll_interval)
        return self.hook.wait_for_batches(batch_ids, spec, log=self.log)


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
