"""Flattened Parquet output: the transfer against the running emulator, into file:// and S3 (moto)."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
    DestinationConflictError,
)
from airflow_provider_batches.transfers.rows import COLUMNS, result_schema
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from tests.conftest import S3Endpoint
from tests.transfers.conftest import FakeBatchesAPI, make_operator, result_line
from tests.transfers.test_results_from_emulator import PREFIX, ended_batch, transfer

ALL_OUTCOMES = ["succeeded", "errored", "canceled", "expired"]


def local_tables(folder: Path) -> pa.Table:
    """Every Parquet file of a job read as one table (fails unless all files share one schema)."""
    return pa.concat_tables(pq.read_table(path) for path in sorted(folder.glob("*.parquet")))


def test_every_result_becomes_one_row_with_the_documented_schema(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    batch = ended_batch(ALL_OUTCOMES)
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    table = pq.read_table(tmp_path / "out" / f"{batch.id}.parquet")
    assert table.schema == result_schema()
    assert table.column_names == [name for name, *_ in COLUMNS]
    assert sorted(table.column("result_type").to_pylist()) == sorted(ALL_OUTCOMES)


def test_a_succeeded_row_holds_text_usage_and_stop_reason(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    batch = ended_batch(["succeeded"])
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    (row,) = pq.read_table(tmp_path / "out" / f"{batch.id}.parquet").to_pylist()
    raw = json.loads(row["raw"])
    message = raw["result"]["message"]
    assert row["custom_id"] == "req-0"
    assert row["batch_id"] == batch.id
    assert row["round"] == 1  # a job without re-drive: every result is round 1
    assert row["model"] == message["model"]
    assert row["stop_reason"] == "end_turn"
    assert row["text"] == message["content"][0]["text"]
    assert row["input_tokens"] == message["usage"]["input_tokens"]
    assert row["output_tokens"] == message["usage"]["output_tokens"]
    assert row["cache_read_input_tokens"] == 0
    assert row["error_type"] is None


def test_an_unpriced_model_has_a_null_cost(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"])  # the emulator-only test model has no price
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    (row,) = pq.read_table(tmp_path / "out" / f"{batch.id}.parquet").to_pylist()
    assert row["cost_usd"] is None


def test_a_priced_model_costs_its_tokens_at_batch_prices(api: FakeBatchesAPI, tmp_path: Path) -> None:
    line = result_line("a")
    line["result"]["message"]["model"] = "claude-haiku-4-5"
    line["result"]["message"]["usage"] = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    api.add_batch("msgbatch_priced", [line])
    operator = make_operator(
        api, batch_id="msgbatch_priced", destination=f"file://{tmp_path}/", output_format="parquet"
    )
    operator.execute({})  # type: ignore[arg-type]
    (row,) = pq.read_table(tmp_path / "msgbatch_priced.parquet").to_pylist()
    assert row["cost_usd"] == pytest.approx((1.0 + 5.0) / 2)


def test_the_row_cost_is_the_spend_formula_with_prices_cache_writes_and_reads(
    api: FakeBatchesAPI, tmp_path: Path
) -> None:
    line = result_line("a")  # the emulator's test model: priced only by prices=
    line["result"]["message"]["usage"] = {
        "input_tokens": 1_000_000,
        "output_tokens": 1_000_000,
        "cache_creation_input_tokens": 3_000_000,
        "cache_read_input_tokens": 1_000_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2_000_000, "ephemeral_1h_input_tokens": 1_000_000},
    }
    api.add_batch("msgbatch_cached", [line])
    operator = make_operator(
        api,
        batch_id="msgbatch_cached",
        destination=f"file://{tmp_path}/",
        output_format="parquet",
        prices={"claude-emulator-test": {"input": 1.0, "output": 5.0}},
    )
    manifest = operator.execute({})  # type: ignore[arg-type]
    (row,) = pq.read_table(tmp_path / "msgbatch_cached.parquet").to_pylist()

    # input 1 + 5-minute writes 2 x 1.25 + 1-hour writes 1 x 2 + reads 1 x 0.1 + output 5, half price
    assert row["cost_usd"] == pytest.approx((1.0 + 2.5 + 2.0 + 0.1 + 5.0) / 2)
    assert manifest["spend"]["cost_usd"] == pytest.approx(row["cost_usd"])


def test_an_errored_row_holds_the_error_type_and_message(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    batch = ended_batch(["errored"])
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    (row,) = pq.read_table(tmp_path / "out" / f"{batch.id}.parquet").to_pylist()
    assert row["error_type"] == "overloaded_error"
    assert "overloaded_error" in row["error_message"]
    assert row["text"] is None
    assert row["input_tokens"] is None


def test_tool_calls_are_a_json_array_of_name_and_input(api: FakeBatchesAPI, tmp_path: Path) -> None:
    line = result_line("a")
    line["result"]["message"]["content"] = [
        {"type": "text", "text": "Looking it up."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
    ]
    api.add_batch("msgbatch_tools", [line])
    operator = make_operator(
        api, batch_id="msgbatch_tools", destination=f"file://{tmp_path}/", output_format="parquet"
    )
    operator.execute({})  # type: ignore[arg-type]
    (row,) = pq.read_table(tmp_path / "msgbatch_tools.parquet").to_pylist()
    assert json.loads(row["tool_calls"]) == [{"id": "toolu_1", "name": "lookup", "input": {"q": "x"}}]
    assert row["text"] == "Looking it up."


def test_rows_are_written_in_row_groups_of_the_size_asked(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    batch = ended_batch(["succeeded"] * 5)
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet", row_group_size=2)
    metadata = pq.ParquetFile(tmp_path / "out" / f"{batch.id}.parquet").metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [2, 2, 1]


def test_the_parquet_compression_asked_is_used(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"])
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet", parquet_compression="snappy")
    metadata = pq.ParquetFile(tmp_path / "out" / f"{batch.id}.parquet").metadata
    assert metadata.row_group(0).column(0).compression == "SNAPPY"


def test_the_manifest_records_the_format_schema_and_row_counts(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    batch = ended_batch(ALL_OUTCOMES)
    manifest = transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    assert manifest["output_format"] == "parquet"
    assert manifest["schema"][0] == {"name": "custom_id", "type": "string", "nullable": False}
    assert [column["name"] for column in manifest["schema"]] == result_schema().names
    (entry,) = manifest["files"]
    assert entry["name"] == f"{batch.id}.parquet"
    assert entry["results"] == 4
    assert entry["bytes"] == (tmp_path / "out" / entry["name"]).stat().st_size


def test_a_split_job_on_s3_reads_back_as_one_table(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    first = ended_batch(["succeeded", "errored", "succeeded"], prefix="one")
    second = ended_batch(["expired", "succeeded"], prefix="two")
    transfer([first.id, second.id], s3_destination, output_format="parquet", split_by_result_type=True)
    keys = [key for key in s3_endpoint.keys(s3_bucket) if key.endswith(".parquet")]
    assert keys == [f"{PREFIX}{kind}.parquet" for kind in ("canceled", "errored", "expired", "succeeded")]
    table = pa.concat_tables(pq.read_table(io.BytesIO(s3_endpoint.read(s3_bucket, key))) for key in keys)
    assert table.schema == result_schema()
    assert sorted(table.column("custom_id").to_pylist()) == ["one-0", "one-1", "one-2", "two-0", "two-1"]
    batch_of = dict(
        zip(table.column("custom_id").to_pylist(), table.column("batch_id").to_pylist(), strict=True)
    )
    assert batch_of["two-1"] == second.id


def test_a_per_batch_job_in_files_reads_back_as_one_table(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    first = ended_batch(["succeeded", "errored"], prefix="one")
    second = ended_batch(["canceled"], prefix="two")
    transfer([first.id, second.id], f"file://{tmp_path}/out/", output_format="parquet")
    table = local_tables(tmp_path / "out")
    assert table.num_rows == 3
    assert table.schema == result_schema()


def test_a_parquet_output_is_not_published_when_counts_differ(api: FakeBatchesAPI, tmp_path: Path) -> None:
    api.add_batch("msgbatch_short", [result_line("a")], counts={"succeeded": 2})
    operator = make_operator(
        api, batch_id="msgbatch_short", destination=f"file://{tmp_path}/", output_format="parquet"
    )
    with pytest.raises(ResultsVerificationError, match="succeeded: expected 2, got 1"):
        operator.execute({})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_parquet_output_survives_a_results_stream_cut_mid_way(api: FakeBatchesAPI, tmp_path: Path) -> None:
    lines = [result_line(f"r{number}", padding=200) for number in range(20)]
    body = api.add_batch("msgbatch_cut", lines)
    api.cut_downloads("msgbatch_cut", after_bytes=len(body) // 2)
    operator = make_operator(
        api, batch_id="msgbatch_cut", destination=f"file://{tmp_path}/", output_format="parquet"
    )
    operator.execute({})  # type: ignore[arg-type]
    table = pq.read_table(tmp_path / "msgbatch_cut.parquet")
    assert sorted(table.column("custom_id").to_pylist()) == sorted(f"r{number}" for number in range(20))


def test_a_rerun_keeps_a_complete_parquet_output(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"])
    first = transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    again = transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    assert again["written_at"] == first["written_at"]


def test_a_jsonl_rerun_does_not_take_a_parquet_output_for_its_own(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    batch = ended_batch(["succeeded"])
    transfer([batch.id], f"file://{tmp_path}/out/", output_format="parquet")
    with pytest.raises(DestinationConflictError, match="already holds the output of other inputs"):
        transfer([batch.id], f"file://{tmp_path}/out/")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"output_format": "csv"}, "output_format must be 'jsonl' or 'parquet'"),
        ({"output_format": "parquet", "compression": "gzip"}, "set parquet_compression"),
        ({"output_format": "parquet", "parquet_compression": "lzma"}, "parquet_compression must be one of"),
        ({"output_format": "parquet", "row_group_size": 0}, "row_group_size must be at least 1"),
    ],
)
def test_bad_output_settings_are_refused_when_the_dag_is_parsed(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AnthropicBatchResultsToObjectStorageOperator(
            task_id="results", batch_id="msgbatch_x", destination="file:///tmp/x/", **settings
        )


def test_a_message_of_unexpected_shape_keeps_its_row_and_raw_json(
    api: FakeBatchesAPI, tmp_path: Path
) -> None:
    odd = result_line("odd")
    odd["result"]["message"]["usage"] = {"input_tokens": "many"}
    api.add_batch("msgbatch_odd", [result_line("plain"), odd])
    operator = make_operator(
        api, batch_id="msgbatch_odd", destination=f"file://{tmp_path}/", output_format="parquet"
    )
    operator.execute({})  # type: ignore[arg-type]
    rows = {row["custom_id"]: row for row in pq.read_table(tmp_path / "msgbatch_odd.parquet").to_pylist()}
    assert rows["odd"]["result_type"] == "succeeded"
    assert json.loads(rows["odd"]["raw"]) == odd
    assert rows["plain"]["input_tokens"] == 3


def test_parquet_without_pyarrow_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match=r"pip install 'airflow-provider-batches\[parquet\]'"):
        AnthropicBatchResultsToObjectStorageOperator(
            task_id="results", batch_id="msgbatch_x", destination="file:///tmp/x/", output_format="parquet"
        )


def test_a_mapped_parquet_export_without_pyarrow_fails_where_the_dag_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match=r"pip install 'airflow-provider-batches\[parquet\]'"):
        AnthropicBatchResultsToObjectStorageOperator.partial(
            task_id="results", destination="file:///tmp/x/", output_format="parquet"
        )


def test_a_mapped_parquet_export_is_built_as_usual_with_pyarrow() -> None:
    from airflow.sdk import DAG

    with DAG("mapped_parquet", schedule=None):
        mapped = AnthropicBatchResultsToObjectStorageOperator.partial(
            task_id="results", destination="file:///tmp/x/", output_format="parquet"
        ).expand(batch_id=["msgbatch_a", "msgbatch_b"])

    assert mapped.partial_kwargs["output_format"] == "parquet"
