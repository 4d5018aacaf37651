"""A complete batch pipeline: budget check -> batch (deferred wait, transient failures re-driven)
-> results to storage (one final result per request, and what it actually cost) -> summary.

Run it with ``make demo`` (against the bundled emulator), or trigger it with params pointing at
your own requests file and bucket. Only ids, counts and paths travel through XCom.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)

with DAG(
    dag_id="anthropic_batch_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example"],
    params={
        "requests_path": Param("file:///tmp/requests.jsonl", type="string"),
        "destination": Param("file:///tmp/claude-results/", type="string"),
        "max_cost_usd": Param(25.0, type="number"),
    },
    doc_md=__doc__,
) as dag:
    count_tokens = AnthropicCountTokensOperator(
        task_id="count_tokens",
        requests_path="{{ params.requests_path }}",
        max_cost_usd="{{ params.max_cost_usd }}",  # type: ignore[arg-type]
    )

    create_batch = AnthropicCreateBatchOperator(
        task_id="create_batch",
        requests_path="{{ params.requests_path }}",
        deferrable=True,
        poll_interval=2,
        retries=2,
        redrive=Redrive(max_rounds=3),  # overloaded, api, rate-limit, timeout errors and expiries
    )

    results_to_storage = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results_to_storage",
        batch_id=create_batch.output,
        destination="{{ params.destination }}{{ run_id | replace(':', '_') | replace('+', '_') }}/",
        split_by_result_type=True,
        cost_estimate=count_tokens.output,  # reported beside the actual cost
    )

    @task
    def summarize(manifest: dict[str, Any]) -> dict[str, Any]:
        """Read the succeeded results back from storage and write a small summary beside them."""
        destination = ObjectStoragePath(manifest["destination"])
        stop_reasons: Counter[str] = Counter()
        output_tokens = 0
        first_answer = None
        with (destination / "succeeded.jsonl").open("r") as lines:
            for line in lines:
                message = json.loads(line)["result"]["message"]
                stop_reasons[message["stop_reason"]] += 1
                output_tokens += message["usage"]["output_tokens"]
                if first_answer is None:
                    first_answer = "".join(b.get("text", "") for b in message["content"])
        summary = {
            "counts": manifest["counts"],
            "cost_usd": manifest["spend"]["cost_usd"],
            "stop_reasons": dict(stop_reasons),
            "output_tokens": output_tokens,
            "first_answer": first_answer,
        }
        (destination / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    count_tokens >> create_batch
    summarize(results_to_storage.output)  # type: ignore[arg-type]
