"""A job larger than one batch: over 100,000 requests (or 256 MB) is split into several batches.

The create operator validates the whole file first (nothing is sent if any line is bad), then
creates the batches one by one, recording each id durably so a retried task never pays twice.
The transfer writes one results file per batch.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.requests import MAX_REQUESTS_PER_BATCH
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)

with DAG(
    dag_id="anthropic_large_batch_job",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example"],
    render_template_as_native_obj=True,
    params={
        "requests_path": Param("s3://my-bucket/requests/large.jsonl", type="string"),
        "requests_conn_id": Param(None, type=["null", "string"]),
        "destination": Param("s3://my-bucket/results/large/", type="string"),
        "dest_conn_id": Param(None, type=["null", "string"]),
        "max_requests_per_batch": Param(MAX_REQUESTS_PER_BATCH, type="integer", minimum=1),
    },
    doc_md=__doc__,
) as dag:
    create_batches = AnthropicCreateBatchOperator(
        task_id="create_batches",
        requests_path="{{ params.requests_path }}",
        requests_conn_id="{{ params.requests_conn_id }}",
        max_requests_per_batch="{{ params.max_requests_per_batch }}",  # type: ignore[arg-type]
        deferrable=True,
        poll_interval=5,
        retries=3,
        retry_delay=timedelta(minutes=1),
    )

    AnthropicBatchResultsToObjectStorageOperator(
        task_id="results_to_storage",
        batch_id=create_batches.output,
        destination="{{ params.destination }}",
        dest_conn_id="{{ params.dest_conn_id }}",
        compression="gzip",
        overwrite=True,
    )
