"""OpenLineage of the create operator and the results transfer, with the OpenLineage provider's classes.

Both run for real against the emulator; the lineage is what the OpenLineage listener would send
(checked as OperatorLineage objects and serialized with the client's own Serde). No server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")

from airflow.providers.openlineage.extractors import OperatorLineage
from openlineage.client.serde import Serde

from airflow_provider_batches import lineage
from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.testing import connection_json
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.airflow_harness import AirflowEnv
from tests.operators.support import MODEL, request, task_context

OTHER_MODEL = "claude-haiku-4-5"  # in the emulator's catalogue: unknown models end errored


def requests_file(path: Path) -> Path:
    lines = [request("a"), request("b", "[emulator:errored]"), request("c", model=OTHER_MODEL)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def create_from_file(path: Path, **kwargs: Any) -> AnthropicCreateBatchOperator:
    operator = AnthropicCreateBatchOperator(
        task_id="create", requests_path=f"file://{path}", poll_interval=0.05, deferrable=False, **kwargs
    )
    operator.execute(task_context())
    return operator


def test_create_lineage_reads_the_requests_file_and_writes_the_batches(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = requests_file(tmp_path / "requests.jsonl")
    operator = create_from_file(path, max_requests_per_batch=2)

    result = operator.get_openlineage_facets_on_complete(None)

    assert isinstance(result, OperatorLineage)
    assert [(d.namespace, d.name) for d in result.inputs] == [("file", str(path))]
    batch_ids = operator._completed_manifest["batch_ids"]  # type: ignore[index]
    assert [(d.namespace, d.name) for d in result.outputs] == [
        ("anthropic", f"message_batches/{batch_id}") for batch_id in batch_ids
    ]


def test_create_lineage_facet_has_models_request_count_batches_and_outcomes(
    emulator: Emulator, tmp_path: Path
) -> None:
    operator = create_from_file(requests_file(tmp_path / "requests.jsonl"))

    facet = operator.get_openlineage_facets_on_complete(None).run_facets["anthropicBatch"]

    serialized = Serde.to_dict(facet)
    assert serialized["models"] == {MODEL: 2, OTHER_MODEL: 1}
    assert serialized["requestCount"] == 3
    assert serialized["batchIds"] == operator._completed_manifest["batch_ids"]  # type: ignore[index]
    assert serialized["requestCounts"]["errored"] == 1
    assert serialized["_schemaURL"].endswith("RunFacet")


def test_create_lineage_of_inline_requests_has_no_input_dataset(emulator: Emulator) -> None:
    operator = AnthropicCreateBatchOperator(
        task_id="create", prompts=["hi"], model=MODEL, max_tokens=8, poll_interval=0.05, deferrable=False
    )
    operator.execute(task_context())

    result = operator.get_openlineage_facets_on_complete(None)

    assert result.inputs == []
    assert len(result.outputs) == 1


def test_create_lineage_is_none_before_the_task_completed() -> None:
    operator = AnthropicCreateBatchOperator(task_id="create", requests=[request("a")])

    assert operator.get_openlineage_facets_on_complete(None) is None


def test_transfer_lineage_reads_the_batches_and_writes_each_file_with_row_counts(
    emulator: Emulator, tmp_path: Path
) -> None:
    create = create_from_file(requests_file(tmp_path / "requests.jsonl"))
    (batch_id,) = create._completed_manifest["batch_ids"]  # type: ignore[index]
    transfer = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results",
        batch_id=batch_id,
        destination=f"file://{tmp_path}/out/",
        split_by_result_type=True,
    )
    transfer.execute(cast(Context, {}))

    result = transfer.get_openlineage_facets_on_complete(None)

    (source,) = result.inputs
    assert (source.namespace, source.name) == ("anthropic", f"message_batches/{batch_id}")
    assert source.inputFacets["inputStatistics"].rowCount == 3
    outputs = {Path(d.name).name: d.outputFacets["outputStatistics"] for d in result.outputs}
    assert {name: stats.rowCount for name, stats in outputs.items()} == {
        "succeeded.jsonl": 2,
        "errored.jsonl": 1,
        "canceled.jsonl": 0,
        "expired.jsonl": 0,
    }
    assert all(d.namespace == "file" and d.name.startswith(f"{tmp_path}/out") for d in result.outputs)
    assert outputs["succeeded.jsonl"].size == (tmp_path / "out" / "succeeded.jsonl").stat().st_size
    assert Serde.to_dict(result.run_facets["anthropicBatchResults"])["counts"]["succeeded"] == 2


def test_object_storage_uris_are_named_by_the_openlineage_convention() -> None:
    assert lineage.uri_dataset("s3://bucket/claude/in.jsonl") == ("s3://bucket", "claude/in.jsonl")
    assert lineage.uri_dataset("gs://b/x.jsonl.gz") == ("gs://b", "x.jsonl.gz")
    assert lineage.uri_dataset("/data/in.jsonl") == ("file", "/data/in.jsonl")


def test_without_the_openlineage_provider_lineage_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    lineage._openlineage.cache_clear()
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    try:
        manifest = {"batch_ids": ["msgbatch_1"], "request_count": 1}
        assert lineage.create_batch_lineage(requests_path=None, models={}, manifest=manifest) is None
        assert lineage.results_transfer_lineage({"batch_ids": ["msgbatch_1"], "files": []}) is None
    finally:
        lineage._openlineage.cache_clear()


@pytest.mark.airflow
def test_the_openlineage_listener_sends_the_facets_of_a_deferred_create_and_its_transfer(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    path = requests_file(tmp_path / "requests.jsonl")
    dag = airflow_env.write_dag(
        f"""
        from datetime import datetime

        from airflow.sdk import DAG

        from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
        from airflow_provider_batches.transfers.results_to_object_storage import (
            AnthropicBatchResultsToObjectStorageOperator,
        )

        with DAG("lineage", schedule=None, start_date=datetime(2026, 1, 1)):
            create = AnthropicCreateBatchOperator(
                task_id="create", requests_path="file://{path}", deferrable=True, poll_interval=0.5
            )
            AnthropicBatchResultsToObjectStorageOperator(
                task_id="results", batch_id=create.output, destination="file://{tmp_path}/out/"
            )
        """,
        name="lineage",
    )
    with Emulator(EmulatorConfig(processing_seconds=1)) as running:
        outcome = airflow_env.dags_test(
            "lineage",
            dag,
            AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(running),
            AIRFLOW__OPENLINEAGE__TRANSPORT='{"type": "console"}',
        )

    assert outcome.task_states() == {"create": "success", "results": "success"}, outcome.output[-5000:]
    (batch_id,) = outcome.xcom("create")["batch_ids"]
    assert outcome.output.count(f'"name": "message_batches/{batch_id}"') >= 2  # out of create, into results
    assert '"anthropicBatch"' in outcome.output
    assert '"anthropicBatchResults"' in outcome.output
