"""AnthropicBatchLink: a button on the task that opens its batch in the Anthropic console.

The console shows one batch per page at ``/workspaces/default/batches/<id>`` (``default`` is the
console's name for the organisation's default workspace; batches of other workspaces are reached
from there). A job split into several batches links to the batch list instead, where all of them
show. The link is pushed to XCom before the task waits, so it works while the task is deferred.
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

        batch_ids = XCom.get_value(ti_key=ti_key, key=BATCH_IDS_XCOM_KEY)
        if not batch_ids:
            return ""
        return console_url(list(batch_ids))

    @classmethod
    def persist(cls, context: Context | dict[str, Any], batch_ids: Sequence[str]) -> None:
        """Push the batch ids and the ready link, so the UI shows the link while the task waits."""
        ti = context["ti"]
        ti.xcom_push(key=BATCH_IDS_XCOM_KEY, value=list(batch_ids))
        ti.xcom_push(key=cls().xcom_key, value=console_url(batch_ids))
