"""Bounded schemas: a recursive output schema becomes a JSON column and exports in seconds with a
small manifest; a schema too deep, too big, too broad or expanding to too many columns is refused
up front, in well under a second and bounded memory, with a clear message."""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.structured_output import (
    MAX_SCHEMA_DEPTH,
    StructuredOutput,
)
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from airflow_provider_batches.transfers.rows import MAX_PARSED_FIELDS, parsed_shape
from tests.transfers.test_results_from_emulator import transfer
from tests.transfers.test_structured_results import create


class Tree(BaseModel):
    """A binary tree: two self-references (44 s and a 5.7 MB manifest before bounds)."""

    label: str
    left: Optional[Tree] = None  # noqa: UP045 (pydantic resolves the forward reference)
    right: Optional[Tree] = None  # noqa: UP045


class Tri(BaseModel):
    """Three self-references (past 120 s and 3.4 GB before bounds)."""

    name: str
    a: Optional[Tri] = None  # noqa: UP045
    b: Optional[Tri] = None  # noqa: UP045
    c: list[Tri] = []


def quickly(action: Callable[[], Any], seconds: float = 1.0, max_bytes: int = 20_000_000) -> Any:
    """Run ``action``; it must finish (or raise) within ``seconds`` of CPU (wall time on a shared machine
    measures the neighbours) with at most ``max_bytes`` allocated."""
    tracemalloc.start()
    started = time.process_time()
    try:
        try:
            return action()
        finally:
            elapsed = time.process_time() - started
            _, peak = tracemalloc.get_traced_memory()
            assert elapsed < seconds, f"took {elapsed:.2f} s of CPU"
            assert peak < max_bytes, f"peaked at {peak:,} bytes"
    finally:
        tracemalloc.stop()


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def fan_out(levels: int, width: int) -> dict[str, Any]:
    """Definitions each used ``width`` times by the one above: ``width ** levels`` fields expanded."""
    defs: dict[str, Any] = {"L0": {"type": "string"}}
    for level in range(1, levels + 1):
        properties = {f"f{i}": {"$ref": f"#/$defs/L{level - 1}"} for i in range(width)}
        defs[f"L{level}"] = {"type": "object", "properties": properties}
    return {"type": "object", "properties": {"top": {"$ref": f"#/$defs/L{levels}"}}, "$defs": defs}


@pytest.mark.parametrize("model", [Tree, Tri], ids=["binary-tree", "three-self-references"])
def test_a_recursive_model_becomes_a_json_column_at_once(model: type[BaseModel]) -> None:
    shape = quickly(lambda: parsed_shape(StructuredOutput.of(model).json_schema))

    assert shape.kind == "struct"
    recursive = [name for name, field in shape.fields.items() if field.kind == "json"]
    assert recursive
    assert set(recursive) <= {"left", "right", "a", "b", "c"}


@pytest.mark.parametrize("model", [Tree, Tri], ids=["binary-tree", "three-self-references"])
def test_a_recursive_schema_exports_to_parquet_in_seconds_with_a_small_manifest(
    anthropic_emulator: Emulator, tmp_path: Path, model: type[BaseModel]
) -> None:
    batch_ids = create("claude-sonnet-4-6", {f"q{i}": "describe" for i in range(20)}, output_schema=model)
    started = time.monotonic()

    manifest = transfer(batch_ids, f"file://{tmp_path}/", output_format="parquet", output_schema=model)

    assert time.monotonic() - started < 10
    assert len(json.dumps(manifest)) < 10_000
    assert manifest["output_schema"] == StructuredOutput.of(model).reference()
    assert set(manifest["output_schema"]) == {"sha256", "title"}
    table = pq.read_table(tmp_path / f"{batch_ids[0]}.parquet")
    assert table.num_rows == 20
    assert table.column("parse_error").null_count == 20  # every answer validated


def test_a_schema_nested_too_deep_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match=f"nested more than {MAX_SCHEMA_DEPTH} levels deep"):
        quickly(lambda: StructuredOutput.of(nested(10_000)))


def test_a_schema_too_large_is_refused_up_front() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "description": "d" * 50_000_000}}}

    with pytest.raises(ValueError, match="larger than 256 KiB"):
        quickly(lambda: StructuredOutput.of(schema))


def test_a_schema_too_broad_is_refused_up_front() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(1_000_000)}}

    with pytest.raises(ValueError, match="more than 20,000 values"):
        quickly(lambda: StructuredOutput.of(schema))


def test_shared_definitions_expanding_past_the_column_budget_are_refused_when_the_operator_is_built() -> None:
    schema = fan_out(levels=12, width=10)  # 10^12 fields if expanded

    def build() -> Any:
        return AnthropicBatchResultsToObjectStorageOperator(
            task_id="results",
            batch_id="msgbatch_x",
            destination="file:///tmp/x/",
            output_format="parquet",
            output_schema=schema,
        )

    with pytest.raises(ValueError, match=f"more than {MAX_PARSED_FIELDS:,} Parquet fields"):
        quickly(build)


def test_the_same_schema_is_fine_for_jsonl_output() -> None:
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id="msgbatch_x", destination="file:///tmp/x/", output_schema=fan_out(12, 10)
    )

    assert operator.output_options.manifest_fields()["output_schema"]["sha256"]
