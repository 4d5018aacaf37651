"""Spend approval: count tokens, ask a human only when the estimate is over a threshold, then create.

``count_tokens`` estimates the job's batch cost (input tokens plus ``max_tokens`` of output per
request, an upper bound). Below ``approval_threshold_usd`` the job goes straight on; above it,
``approve_spend`` (the standard provider's ``ApprovalOperator``, Airflow 3.1+) waits for someone to
press Approve or Reject in the UI's Required Actions; Reject skips the batch, and nothing is spent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator

with DAG(
    dag_id="anthropic_batch_spend_approval",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example"],
    params={
        "requests_path": Param("file:///tmp/requests.jsonl", type="string"),
        "approval_threshold_usd": Param(10.0, type="number"),
    },
    doc_md=__doc__,
) as dag:
    count_tokens = AnthropicCountTokensOperator(
        task_id="count_tokens", requests_path="{{ params.requests_path }}"
    )

    @task.branch
    def route_by_cost(estimate: dict[str, Any], params: dict[str, Any] | None = None) -> str:
        """Unpriced models count as over the threshold: a human decides."""
        assert params is not None
        cost = (estimate.get("estimated_cost_usd") or {}).get("total_max")
        if cost is None or cost > float(params["approval_threshold_usd"]):
            return "approve_spend"
        return "within_budget"

    approve_spend = ApprovalOperator(
        task_id="approve_spend",
        subject="Approve an Anthropic batch job?",
        body=(
            "{{ ti.xcom_pull(task_ids='count_tokens')['request_count'] }} requests, estimated at most "
            "{{ ti.xcom_pull(task_ids='count_tokens')['estimated_cost_usd'] }} USD "
            "(threshold {{ params.approval_threshold_usd }} USD)."
        ),
        response_timeout=timedelta(hours=12),
        defaults="Reject",  # no answer in 12 hours: nothing is spent
    )
    within_budget = EmptyOperator(task_id="within_budget")

    create_batch = AnthropicCreateBatchOperator(
        task_id="create_batch",
        requests_path="{{ params.requests_path }}",
        deferrable=True,
        poll_interval=2,
        retries=2,
        trigger_rule="none_failed_min_one_success",
    )

    route = route_by_cost(count_tokens.output)  # type: ignore[arg-type]
    route >> [approve_spend, within_budget]
    [approve_spend, within_budget] >> create_batch
