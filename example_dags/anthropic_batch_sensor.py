"""Wait for batches created outside Airflow (a notebook, another service), then export their results.

The sensor defers to the triggerer, so no worker slot is held while the batches run; it never
cancels them, since this DAG does not own them. Trigger with ``{"batch_ids": ["msgbatch_..."]}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)

with DAG(
    dag_id="anthropic_batch_sensor",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example"],
    render_template_as_native_obj=True,
    params={
        "batch_ids": Param([], type="array", items={"type": "string"}, minItems=1),
        "destination": Param("file:///tmp/claude-results/external/", type="string"),
    },
    doc_md=__doc__,
) as dag:
    wait = AnthropicBatchSensor(
        task_id="wait_for_batches",
        batch_id="{{ params.batch_ids }}",
        deferrable=True,
        poke_interval=5,
        timeout=24 * 3600,
    )

    (
        AnthropicBatchResultsToObjectStorageOperator(
            task_id="results_to_storage",
            batch_id="{{ params.batch_ids }}",
            destination="{{ params.destination }}",
            overwrite=True,
        )
        << wait
    )
