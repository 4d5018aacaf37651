"""A batch job with a ``DeadlineAlert`` for the 24-hour Message Batches window.

A batch not ended 24 hours after its create expires: its unfinished requests end ``expired``. The
DAG-level deadline fires when a run is still going 24 h + ``margin`` after it was queued, so someone
looks before results are lost. The default callback logs a warning in the triggerer; pass any
``AsyncCallback``/``SyncCallback`` (a Slack or SMTP notifier...) as ``callback=`` instead.
``batch_window_deadline()`` is None on an Airflow without Deadline Alerts, so this parses everywhere.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_batches.deadlines import batch_window_deadline
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator

with DAG(
    dag_id="anthropic_batch_deadline",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example"],
    params={"requests_path": Param("file:///tmp/requests.jsonl", type="string")},
    deadline=batch_window_deadline(margin=timedelta(minutes=30)),
    doc_md=__doc__,
) as dag:
    AnthropicCreateBatchOperator(
        task_id="create_batch",
        requests_path="{{ params.requests_path }}",
        deferrable=True,
        timeout=24 * 3600,  # the API's own window; the deadline above flags the run before that
        cancel_on_timeout=False,  # an expired batch keeps its finished results: export them anyway
    )
