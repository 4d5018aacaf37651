"""The Parquet rows: the typed ``parsed`` column (a JSON schema's arrow type), and rows built per
column equal to rows built line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from airflow_provider_batches.structured_output import StructuredOutput
from airflow_provider_batches.transfers.rows import (
    RowBuffer,
    _arrow_columns,
    _python_columns,
    parsed_type,
    result_schema,
)


class Owner(BaseModel):
    name: str


class Ticket(BaseModel):
    owner: Owner
    priority: int | None = None


@pytest.mark.parametrize(
    ("schema", "arrow"),
    [
        ({"type": "string"}, pa.string()),
        ({"enum": ["a", "b"]}, pa.string()),
        ({"type": "integer"}, pa.int64()),
        ({"type": "number"}, pa.float64()),
        ({"type": "boolean"}, pa.bool_()),
        ({"type": ["integer", "null"]}, pa.int64()),
        ({"type": "array", "items": {"type": "number"}}, pa.list_(pa.float64())),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, pa.string()),  # kept as JSON text
        ({"type": "object"}, pa.string()),  # free-form: kept as JSON text
    ],
)
def test_each_json_type_has_its_arrow_type(schema: dict[str, Any], arrow: pa.DataType) -> None:
    assert parsed_type({"type": "object", "properties": {"field": schema}}) == pa.struct([("field", arrow)])


def test_nested_pydantic_models_become_nested_structs() -> None:
    schema = StructuredOutput.of(Ticket).json_schema
    assert parsed_type(schema) == pa.struct(
        [("owner", pa.struct([("name", pa.string())])), ("priority", pa.int64())]
    )


# -- rows built per column -------------------------------------------------------------------------


def line(custom_id: str, result: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}).encode()


def answer(content: list[dict[str, Any]], **usage: Any) -> dict[str, Any]:
    message = {"model": "claude-haiku-4-5", "stop_reason": "end_turn", "content": content, "usage": usage}
    return {"type": "succeeded", "message": message}


VARIED_LINES = [
    line(
        "two-texts", answer([{"type": "text", "text": "a"}, {"type": "text", "text": "é\nb"}], input_tokens=1)
    ),
    line("no-text", answer([], input_tokens=2, output_tokens=0)),
    line("empty-text", answer([{"type": "text", "text": ""}], output_tokens=3)),
    line(
        "tool",
        answer(
            [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": [1, {"r": None}]}},
            ],
            input_tokens=4,
            cache_creation_input_tokens=30,
            cache_creation={"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
        ),
    ),
    line("no-usage", {"type": "succeeded", "message": {"model": "claude-haiku-4-5", "content": []}}),
    line(
        "failed",
        {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "x"}}},
    ),
    line("late", {"type": "expired"}),
    line("unpriced", {"type": "succeeded", "message": {"model": "claude-new", "content": [], "usage": {}}}),
]


def test_rows_built_per_column_equal_rows_built_line_by_line() -> None:
    data = b"\n".join([*VARIED_LINES, b""])

    per_column = _arrow_columns(bytearray(data), pa.array(VARIED_LINES, pa.binary()))
    line_by_line = _python_columns(list(VARIED_LINES))

    assert per_column is not None
    assert {name: column.to_pylist() for name, column in per_column.items()} == {
        name: column.to_pylist() for name, column in line_by_line.items()
    }


def test_a_line_of_unexpected_shape_sends_its_rows_line_by_line_and_keeps_the_others_fields() -> None:
    odd = line("odd", answer([{"type": "text", "text": "x"}], input_tokens="many"))
    buffer = RowBuffer(result_schema())
    buffer.add(b"\n".join([*VARIED_LINES, odd, b""]), "msgbatch_a", 1)

    rows = {row["custom_id"]: row for row in buffer.take().to_pylist()}

    assert rows["odd"]["result_type"] == "succeeded"
    assert rows["odd"]["input_tokens"] is None
    assert rows["two-texts"]["text"] == "aé\nb"
    assert rows["tool"]["cost_usd"] == pytest.approx((4 * 1.0 + 10 * 1.25 + 20 * 2.0) / 1e6 / 2)


def test_rows_of_several_batches_and_rounds_in_one_row_group_keep_their_own_batch_and_round() -> None:
    buffer = RowBuffer(result_schema())
    buffer.add(b"\n".join([*VARIED_LINES[:3], b""]), "msgbatch_one", 1)
    buffer.add(b"\n".join([*VARIED_LINES[3:5], b""]), "msgbatch_two", 2)
    buffer.add(b"\n".join([*VARIED_LINES[5:], b""]), "msgbatch_one", 1)

    rows = buffer.take().to_pylist()

    assert [(row["batch_id"], row["round"]) for row in rows] == [("msgbatch_one", 1)] * 3 + [
        ("msgbatch_two", 2)
    ] * 2 + [("msgbatch_one", 1)] * 3
    assert [row["raw"].encode() for row in rows] == VARIED_LINES
    assert buffer.nbytes == 0


def test_a_parquet_file_writes_its_rows_once_max_buffer_bytes_are_held_in_row_groups_of_the_size_asked(
    tmp_path: Path,
) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_batches.transfers.parquet_writer import BatchContext, ParquetResultsFile

    staged = ParquetResultsFile(
        "x.parquet",
        ObjectStoragePath(f"file://{tmp_path}/x.parquet"),
        schema=result_schema(),
        context=BatchContext("msgbatch_a", 1),
        row_group_size=7,
        max_buffer_bytes=4_000,
    )
    chunk = b"\n".join([*VARIED_LINES, b""])
    header = staged.size
    written_before_close = []
    for _ in range(20):
        staged.write(chunk)
        written_before_close.append(staged.size)
    staged.close()

    metadata = pq.ParquetFile(tmp_path / "x.parquet").metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sum(groups) == 20 * len(VARIED_LINES)
    assert max(groups) == 7
    flushes = sorted(set(written_before_close) - {header})
    assert len(flushes) >= 20 * len(chunk) // 4_000 - 1  # rows written as the input went by, not at the end
    assert written_before_close[4_000 // len(chunk) + 1] > header
