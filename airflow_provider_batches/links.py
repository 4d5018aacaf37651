"""AnthropicBatchLink: a button on the task that opens its batch in the Anthropic console.

The console shows one batch per page at ``/workspaces/default/batches/<id>`` (``default`` is the
console's name for the organisation's default workspace; batches of other workspaces are reached
from there). A job split into several batches links to the batch list instead, where all of them
show. The link is pushed to XCom before the task waits, so it works while the task is deferred.

When a task ends, Airflow asks every extra link for its value. Looking up an XCom that was never
pushed makes Airflow log an error ("XCom not found") that hides the task's real error, so the link
looks only when the batch ids can exist: it remembers what ``persist`` pushed in this process, and
otherwise looks up only after a resume from deferral (when ``persist`` ran in an earlier process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

CONSOLE_BATCHES_URL = "https://console.anthropic.com/workspaces/default/batches"
#: Where operators push the job's batch ids before waiting (also read by downstream tasks).
BATCH_IDS_XCOM_KEY = "batch_ids"
#: The attribute ``persist`` sets on the running task, so that ``get_link`` needs no look-up.
_PERSISTED_ATTR = "_anthropic_console_batch_ids"


def console_url(batch_ids: Sequence[str]) -> str:
    """The console page of one batch, or the batch list for a job of several (or none yet)."""
    if len(batch_ids) == 1:
        return f"{CONSOLE_BATCHES_URL}/{batch_ids[0]}"
    return CONSOLE_BATCHES_URL


class AnthropicBatchLink(BaseOperatorLink):
    """Extra link to the task's batch in the Anthropic console."""

    name = "Anthropic Console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        persisted = getattr(operator, _PERSISTED_ATTR, None)
        if persisted is not None:
            return console_url(persisted)
        if not _may_have_persisted(ti_key):
            return ""
        batch_ids = XCom.get_value(ti_key=ti_key, key=BATCH_IDS_XCOM_KEY)
        if not batch_ids:
            return ""
        return console_url(list(batch_ids))

    @classmethod
    def persist(cls, context: Context | dict[str, Any], batch_ids: Sequence[str]) -> None:
        """Push the batch ids and the ready link, so the UI shows the link while the task waits."""
        task = context.get("task")
        if task is not None:
            setattr(task, _PERSISTED_ATTR, list(batch_ids))
        ti = context["ti"]
        ti.xcom_push(key=BATCH_IDS_XCOM_KEY, value=list(batch_ids))
        ti.xcom_push(key=cls().xcom_key, value=console_url(batch_ids))


def _may_have_persisted(ti_key: Any) -> bool:
    """False for a task instance that ran ``execute`` in this process and never called ``persist``.

    A running task instance knows from the server whether it resumes after deferral; a plain key (no
    such context) may belong to any finished task, so it is looked up.
    """
    server_context = getattr(ti_key, "_ti_context_from_server", None)
    if server_context is None:
        return True
    return bool(getattr(server_context, "next_method", None))
