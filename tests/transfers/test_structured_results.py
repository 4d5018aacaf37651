"""Structured output end to end: the create operator asks for a schema, the emulator answers, the
transfer validates every answer into ``parsed`` and lists the invalid ones, on file:// and S3."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from tests.conftest import S3Endpoint
from tests.operators.support import batches_created, request, task_context
from tests.transfers.test_results_from_emulator import PREFIX, transfer

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["label", "score", "tags"],
}
INVALID = " [emulator:invalid_output]"


class Verdict(BaseModel):
    label: str
    score: float


def create(model: str, texts: dict[str, str], output_schema: Any = SCHEMA) -> list[str]:
    """Submit one request per ``texts`` item through the create operator; the batch ids once ended."""
    operator = AnthropicCreateBatchOperator(
        task_id="create",
        requests=[request(custom_id, text, model=model, max_tokens=512) for custom_id, text in texts.items()],
        output_schema=output_schema,
        max_error_rate=1.0,  # a batch of errored requests is what some of these tests transfer
    )
    manifest = operator.execute(task_context())  # type: ignore[arg-type]
    batch_ids: list[str] = manifest["batch_ids"]
    return batch_ids


def jsonl_lines(path: Path) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line for line in map(json.loads, path.read_text().splitlines())}


def test_valid_answers_get_a_parsed_object_in_jsonl(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    (batch_id,) = create("claude-sonnet-4-6", {"good": "classify"})
    transfer([batch_id], f"file://{tmp_path}/", output_schema=SCHEMA)
    line = jsonl_lines(tmp_path / f"{batch_id}.jsonl")["good"]
    assert line["parsed"]["label"] in ("spam", "ham")
    assert line["parse_error"] is None
    assert json.loads(line["result"]["message"]["content"][0]["text"]) == line["parsed"]


def test_an_invalid_answer_keeps_its_row_and_is_listed_with_the_reason(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    (batch_id,) = create("claude-sonnet-4-6", {"good": "classify", "bad": "classify" + INVALID})
    manifest = transfer([batch_id], f"file://{tmp_path}/", output_schema=SCHEMA)
    line = jsonl_lines(tmp_path / f"{batch_id}.jsonl")["bad"]
    assert line["parsed"] is None
    assert "not JSON" in line["parse_error"]
    (listed,) = jsonl_lines(tmp_path / "invalid_output.jsonl").values()
    assert (listed["custom_id"], listed["batch_id"]) == ("bad", batch_id)
    assert listed["reason"] == line["parse_error"]
    assert listed["result"] == line["result"]
    assert manifest["invalid_output"] == {"file": "invalid_output.jsonl", "results": 1}
    assert {"name": "invalid_output.jsonl", "results": 1}.items() <= manifest["files"][-1].items()


def test_a_job_without_invalid_answers_has_no_invalid_output_file(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    (batch_id,) = create("claude-sonnet-4-6", {"good": "classify"})
    manifest = transfer([batch_id], f"file://{tmp_path}/", output_schema=SCHEMA)
    assert manifest["invalid_output"] == {"file": None, "results": 0}
    assert not (tmp_path / "invalid_output.jsonl").exists()


def test_errored_results_are_not_validated(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    (batch_id,) = create("claude-sonnet-4-6", {"failed": "classify [emulator:errored]"})
    manifest = transfer([batch_id], f"file://{tmp_path}/", output_schema=SCHEMA)
    line = jsonl_lines(tmp_path / f"{batch_id}.jsonl")["failed"]
    assert (line["parsed"], line["parse_error"]) == (None, None)
    assert manifest["invalid_output"]["results"] == 0


def test_parquet_on_s3_has_typed_parsed_columns_and_lists_invalid_answers(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    (batch_id,) = create("claude-sonnet-4-6", {"good": "classify", "bad": "classify" + INVALID})
    manifest = transfer([batch_id], s3_destination, output_format="parquet", output_schema=SCHEMA)
    table = pq.read_table(io.BytesIO(s3_endpoint.read(s3_bucket, f"{PREFIX}{batch_id}.parquet")))
    assert table.schema.field("parsed").type == pa.struct(
        [("label", pa.string()), ("score", pa.float64()), ("tags", pa.list_(pa.string()))]
    )
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    assert rows["good"]["parsed"]["label"] in ("spam", "ham")
    assert rows["bad"]["parsed"] is None
    assert "not JSON" in rows["bad"]["parse_error"]
    listed = json.loads(s3_endpoint.read(s3_bucket, f"{PREFIX}invalid_output.jsonl"))
    assert listed["custom_id"] == "bad"
    assert manifest["schema"][-2]["name"] == "parsed"


def test_a_pydantic_model_on_a_tool_call_model_split_by_type_reads_as_one_table(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    (batch_id,) = create(
        "claude-emulator-test",  # no structured outputs: a forced tool call
        {"good": "classify", "bad": "classify" + INVALID, "failed": "x [emulator:errored]"},
        output_schema=Verdict,
    )
    manifest = transfer(
        [batch_id],
        f"file://{tmp_path}/",
        output_format="parquet",
        output_schema=Verdict,
        split_by_result_type=True,
    )
    table = pa.concat_tables(pq.read_table(path) for path in sorted(tmp_path.glob("*.parquet")))
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    assert set(rows["good"]["parsed"]) == {"label", "score"}
    assert rows["good"]["stop_reason"] == "tool_use"
    assert rows["bad"]["parse_error"].startswith("label: Input should be a valid string")
    assert rows["failed"]["result_type"] == "errored"
    assert manifest["counts"]["succeeded"] == 2
    assert manifest["invalid_output"]["results"] == 1


def test_a_request_that_asks_for_another_format_is_refused_before_anything_is_sent(
    anthropic_emulator: Emulator,
) -> None:
    operator = AnthropicCreateBatchOperator(
        task_id="create",
        requests=[request("clash", model="claude-emulator-test", tool_choice={"type": "auto"})],
        output_schema=SCHEMA,
    )
    with pytest.raises(RequestValidationError, match=r"custom_id 'clash'.*tool_choice is already set"):
        operator.execute(task_context())  # type: ignore[arg-type]
    assert batches_created(anthropic_emulator) == 0
