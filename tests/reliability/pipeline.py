"""The pipeline the reliability suite runs: count tokens -> create (deferred wait) -> results to storage,
with task retries on a short delay so that faults surfacing as task failures are retried."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from airflow_provider_batches.emulator import Emulator
from tests.airflow_harness import AirflowEnv, DagRunOutcome
from tests.reliability.conftest import connection

DAG_ID = "reliability_pipeline"

PIPELINE_DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)

with DAG(
    "reliability_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args={"retries": 4, "retry_delay": timedelta(seconds=1)},
    params={"requests_path": "", "destination": ""},
):
    count = AnthropicCountTokensOperator(
        task_id="count_tokens", requests_path="{{ params.requests_path }}", max_cost_usd=5
    )
    create = AnthropicCreateBatchOperator(
        task_id="create_batch", requests_path="{{ params.requests_path }}", deferrable=True, poll_interval=1
    )
    results = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results_to_storage",
        batch_id=create.output,
        destination="{{ params.destination }}",
        split_by_result_type=True,
        download_retry_delay=0.5,
    )
    count >> create >> results

    # A second connection with a wrong key: its failure text must not show either key.
    AnthropicCreateBatchOperator(
        task_id="wrong_key", conn_id="anthropic_wrong_key", requests_path="{{ params.requests_path }}",
        deferrable=True, poll_interval=1, retries=0,
    )
"""

WRONG_KEY = "sk-ant-api03-WRONG-KEY-RELIABILITY-z8Y1"

#: Ids the emulator derives from the batch id (message ids, errored lines' request ids): they differ
#: from batch to batch by design, so they are blanked before result files are compared.
_BATCH_DERIVED_IDS = re.compile(rb"(msg_emu_|req_emu_)[A-Za-z0-9]{24}")


def fresh_home(airflow_env: AirflowEnv, home: Path) -> AirflowEnv:
    """An AIRFLOW_HOME of its own (a copy of the migrated DB): its logs and DB hold only this test's runs."""
    env = AirflowEnv(home)
    shutil.copy(airflow_env.db_path, env.db_path)
    env.extra_env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(home / "logs")
    return env


def run_pipeline(env: AirflowEnv, emulator: Emulator, requests: Path, destination: Path) -> DagRunOutcome:
    path = env.dags_folder / f"{DAG_ID}.py"
    if not path.exists():
        path = env.write_dag(PIPELINE_DAG, name=DAG_ID)
    wrong = json.loads(connection(emulator))
    wrong["password"] = WRONG_KEY
    return env.dags_test(
        DAG_ID,
        path,
        conf={"requests_path": f"file://{requests}", "destination": f"file://{destination}/"},
        timeout=600,
        AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection(emulator),
        AIRFLOW_CONN_ANTHROPIC_WRONG_KEY=json.dumps(wrong),
    )


def published(destination: Path) -> dict[str, bytes]:
    """The published result files (ids derived from the batch id blanked); no staging folder left."""
    assert not list(destination.glob(".staging-*")), list(destination.iterdir())
    return {
        path.name: _BATCH_DERIVED_IDS.sub(rb"\1<id>", path.read_bytes())
        for path in sorted(destination.glob("*.jsonl"))
    }


def manifest(destination: Path) -> dict[str, Any]:
    return dict(json.loads((destination / "_manifest.json").read_text()))
