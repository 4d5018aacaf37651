"""The typed ``parsed`` column: how a JSON schema becomes an arrow type."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from pydantic import BaseModel

from airflow_provider_batches.structured_output import StructuredOutput
from airflow_provider_batches.transfers.rows import parsed_type


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
