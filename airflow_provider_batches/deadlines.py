"""A DeadlineAlert for the Message Batches 24-hour window, on Airflows that have Deadline Alerts (3.1+).

A batch that has not ended 24 hours after its create expires: its unfinished requests end
``expired``. :func:`batch_window_deadline` returns a DAG-level ``DeadlineAlert`` that fires when a
run is still going that long after it was queued (plus a margin for the tasks before and after the
batch), so someone looks before the results are lost; or None where Airflow has no Deadline Alerts,
so ``DAG(deadline=batch_window_deadline())`` parses on every supported Airflow.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

#: How long the API keeps working on a batch before its unfinished requests expire.
BATCH_WINDOW = timedelta(hours=24)


async def log_missed_batch_window(**kwargs: Any) -> None:
    """The default callback (runs in the triggerer): a warning naming the DAG run."""
    context = kwargs.get("context") or {}
    dag_run = context.get("dag_run") if isinstance(context, dict) else None
    log.warning(
        "A DAG run is still going past the 24-hour Message Batches window: %s. Requests not yet "
        "processed expire; check the batches in the Anthropic console.",
        getattr(dag_run, "run_id", None) or kwargs.get("run") or "(run unknown)",
    )


def batch_window_deadline(
    *, margin: timedelta = timedelta(minutes=30), callback: Any = None, name: str | None = None
) -> Any:
    """A ``DeadlineAlert`` at queued time + 24 h + ``margin``; None on Airflows without Deadline Alerts.

    :param margin: time of the tasks around the batch (counting tokens, exporting results).
    :param callback: an ``AsyncCallback``/``SyncCallback`` (e.g. a notifier); default: a logged warning.
    """
    try:
        from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference
    except ImportError:
        return None
    named = {"name": name} if name else {}  # ``name`` is newer than Airflow 3.1
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=BATCH_WINDOW + margin,
        callback=callback or AsyncCallback(log_missed_batch_window),
        **named,
    )
