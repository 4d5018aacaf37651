"""Housekeeping: cancel batches stuck in progress too long, delete ended batches past retention.

The listing runs once; cancel and delete are mapped over what it found, so an empty list simply
maps to no task. Both operators are idempotent: a batch already ended or deleted is a success.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import (
    AnthropicCancelBatchOperator,
    AnthropicDeleteBatchOperator,
)

with DAG(
    dag_id="anthropic_batch_cleanup",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["anthropic", "example", "maintenance"],
    params={
        "cancel_after_hours": Param(20, type="number", minimum=0),
        "delete_after_days": Param(7, type="number", minimum=0),
    },
    doc_md=__doc__,
) as dag:

    @task
    def find_stale_batches(params: dict[str, Any] | None = None) -> list[str]:
        """Batches still in progress after ``cancel_after_hours``: only their ids travel via XCom."""
        assert params is not None
        before = datetime.now(timezone.utc) - timedelta(hours=float(params["cancel_after_hours"]))
        return [
            batch.id
            for batch in AnthropicHook().iter_batches()
            if batch.processing_status == "in_progress" and batch.created_at <= before
        ]

    @task
    def find_expired_batches(params: dict[str, Any] | None = None) -> list[str]:
        """Batches ended more than ``delete_after_days`` ago."""
        assert params is not None
        before = datetime.now(timezone.utc) - timedelta(days=float(params["delete_after_days"]))
        return [
            batch.id
            for batch in AnthropicHook().iter_batches()
            if batch.is_ended and (batch.ended_at or batch.created_at) <= before
        ]

    AnthropicCancelBatchOperator.partial(task_id="cancel_stale_batch").expand(batch_id=find_stale_batches())
    AnthropicDeleteBatchOperator.partial(task_id="delete_old_batch").expand(batch_id=find_expired_batches())
