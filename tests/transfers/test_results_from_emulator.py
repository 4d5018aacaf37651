"""The results transfer against the running emulator (real HTTP, injected faults), into S3 and file://."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context, ObjectStoragePath

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import APIConnectionError, BatchNotReadyError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.testing import connection_json
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.airflow_harness import AirflowEnv
from tests.conftest import S3Endpoint

NO_CONTEXT = cast(Context, {})
PREFIX = "claude/2026-11-22/"
MARKERS = {
    "succeeded": "",
    "errored": " [emulator:errored=overloaded_error]",
    "canceled": " [emulator:canceled]",
    "expired": " [emulator:expired]",
}


def ended_batch(outcomes: list[str], prefix: str = "req") -> MessageBatch:
    """Create a batch on the emulator whose requests end as ``outcomes`` say, and read it back ended."""
    hook = AnthropicHook()
    requests = [
        {
            "custom_id": f"{prefix}-{number}",
            "params": {
                "model": "claude-emulator-test",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"question {number}{MARKERS[outcome]}"}],
            },
        }
        for number, outcome in enumerate(outcomes)
    ]
    created = hook.create_batch(requests)
    batch = hook.get_batch(created.id)
    hook.close()
    assert batch.is_ended
    return batch


def transfer(batch_ids: list[str], destination: ObjectStoragePath | str, **kwargs: Any) -> dict[str, Any]:
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=batch_ids, destination=destination, download_retry_delay=0, **kwargs
    )
    result: dict[str, Any] = operator.execute(NO_CONTEXT)
    return result


def downloads(emulator: Emulator) -> int:
    calls = emulator.admin.stats()["calls"].get("GET /v1/messages/batches/{id}/results", {})
    return sum(calls.values())


def test_a_multi_batch_job_lands_in_s3_with_counts_matching_every_batch(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    first = ended_batch(["succeeded", "errored", "canceled", "succeeded"], prefix="one")
    second = ended_batch(["expired", "succeeded"], prefix="two")
    manifest = transfer([first.id, second.id], s3_destination)
    assert manifest["counts"] == {"succeeded": 3, "errored": 1, "canceled": 1, "expired": 1}
    assert s3_endpoint.keys(s3_bucket) == sorted(
        [f"{PREFIX}_manifest.json", f"{PREFIX}{first.id}.jsonl", f"{PREFIX}{second.id}.jsonl"]
    )
    lines = s3_endpoint.read(s3_bucket, f"{PREFIX}{first.id}.jsonl").splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["one-0", "one-1", "one-2", "one-3"]


def test_split_mode_sorts_the_emulators_results_by_type(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    first = ended_batch(["succeeded", "errored", "canceled"], prefix="one")
    second = ended_batch(["expired", "errored"], prefix="two")
    transfer([first.id, second.id], s3_destination, split_by_result_type=True)
    errored = s3_endpoint.read(s3_bucket, f"{PREFIX}errored.jsonl").splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in errored) == ["one-1", "two-1"]


def test_a_stream_the_emulator_cuts_is_downloaded_again_and_published_whole(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    batch = ended_batch(["succeeded"] * 200)
    anthropic_emulator.admin.set_config(
        next_faults=["cut"], cut_results_after_bytes=20_000, cut_results_fraction=0
    )
    manifest = transfer([batch.id], s3_destination)
    assert downloads(anthropic_emulator) == 2
    assert anthropic_emulator.admin.stats()["faults_injected"] == {"cut": 1}
    assert manifest["results"] == 200
    lines = s3_endpoint.read(s3_bucket, f"{PREFIX}{batch.id}.jsonl").splitlines()
    assert len({json.loads(line)["custom_id"] for line in lines}) == len(lines) == 200


def test_a_stream_cut_on_every_attempt_leaves_no_object_at_the_final_path(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    batch = ended_batch(["succeeded"] * 200)
    anthropic_emulator.admin.set_config(cut_results_after_bytes=20_000, cut_results_fraction=1)
    with pytest.raises(APIConnectionError, match="failed 3 time"):
        transfer([batch.id], s3_destination, download_retries=2)
    assert downloads(anthropic_emulator) == 3
    assert s3_endpoint.keys(s3_bucket) == []
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_a_batch_still_in_progress_is_refused(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    anthropic_emulator.admin.set_config(processing_seconds=3600)
    hook = AnthropicHook()
    params = {
        "model": "claude-emulator-test",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    batch = hook.create_batch([{"custom_id": "a", "params": params}])
    hook.close()
    with pytest.raises(BatchNotReadyError, match="is in_progress; results exist only once it has ended"):
        transfer([batch.id], f"file://{tmp_path}/out/")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- in a real DAG ----------------------------------------------------------------------------------

DAG_SOURCE = """
from datetime import datetime

from airflow.sdk import DAG, Asset

from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)

with DAG(
    dag_id="results_transfer_e2e",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
):
    AnthropicBatchResultsToObjectStorageOperator(
        task_id="results_to_storage",
        batch_id="{{{{ dag_run.conf['batch_ids'] }}}}",
        destination="file://{root}/claude/{{{{ dag_run.conf['day'] }}}}/",
        split_by_result_type=True,
        outlets=[Asset("file://{root}/claude")],
        download_retry_delay=0,
    )
"""


@pytest.mark.airflow
def test_runs_in_a_dag_with_templated_inputs_and_emits_an_asset_event(
    anthropic_emulator: Emulator, airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    first = ended_batch(["succeeded", "errored"], prefix="one")
    second = ended_batch(["succeeded", "expired"], prefix="two")
    anthropic_emulator.admin.set_config(
        next_faults=["cut"], cut_results_after_bytes=100, cut_results_fraction=0
    )
    dag_file = airflow_env.write_dag(DAG_SOURCE.format(root=tmp_path))
    outcome = airflow_env.dags_test(
        "results_transfer_e2e",
        dag_file,
        conf={"batch_ids": [first.id, second.id], "day": "2026-11-22"},
        forked=True,  # the example pipeline's test runs the transfer in the real executable
        AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(anthropic_emulator),
    )
    assert outcome.returncode == 0, outcome.output
    assert outcome.task_states() == {"results_to_storage": "success"}
    manifest = outcome.xcom("results_to_storage")
    written = json.loads((tmp_path / "claude/2026-11-22/_manifest.json").read_text())
    assert manifest == written
    assert manifest["counts"] == {"succeeded": 2, "errored": 1, "canceled": 0, "expired": 1}
    assert downloads(anthropic_emulator) == 3  # one batch's stream was cut once and downloaded again
    events = airflow_env.query("SELECT extra FROM asset_event")
    extras = [json.loads(row[0]) for row in events]
    assert any(extra.get("destination") == manifest["destination"] for extra in extras)
    assert any(extra.get("counts") == manifest["counts"] for extra in extras)
