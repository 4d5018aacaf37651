"""Flattened result rows: the documented columns of the Parquet output and how a result line fills them.

One row per result line. The schema is explicit (never inferred from data), so every file of a job,
including an empty one, has the same columns and types and all of them load into one table. With an
output schema, a ``parsed`` struct column holds the validated answer, typed from the schema, and
``parse_error`` says why an answer did not validate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_batches.pricing import price_for, usage_cost_usd
from airflow_provider_batches.result_lines import (
    CONTENT_DECODER,
    ContentMessage,
    ResultLine,
    Usage,
    decode_line,
)
from airflow_provider_batches.structured_output import InvalidOutputError, StructuredOutput

if TYPE_CHECKING:
    import pyarrow as pa

#: (name, arrow type name, nullable, meaning): the README's column reference is this table.
COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("custom_id", "string", False, "the request's custom_id"),
    ("batch_id", "string", False, "the batch the result came from"),
    ("round", "int32", True, "the re-drive round (null until re-drive exists)"),
    ("result_type", "string", False, "succeeded, errored, canceled or expired"),
    ("model", "string", True, "the model that answered (succeeded only)"),
    ("stop_reason", "string", True, "end_turn, max_tokens, tool_use... (succeeded only)"),
    ("text", "string", True, "the text blocks of the answer, joined without separator"),
    ("tool_calls", "string", True, 'JSON array of {"id", "name", "input"}; null when none'),
    ("input_tokens", "int64", True, "usage.input_tokens"),
    ("output_tokens", "int64", True, "usage.output_tokens"),
    ("cache_creation_input_tokens", "int64", True, "usage.cache_creation_input_tokens"),
    ("cache_read_input_tokens", "int64", True, "usage.cache_read_input_tokens"),
    (
        "cost_usd",
        "float64",
        True,
        "the request's usage (input, output, cache writes and reads) at batch prices; null if unpriced",
    ),
    ("error_type", "string", True, "the error's type (errored only), e.g. overloaded_error"),
    ("error_message", "string", True, "the error's message (errored only)"),
    ("raw", "string", False, "the whole result line as JSON: nothing is lost"),
)
PARSED_COLUMN = "parsed"
PARSE_ERROR_COLUMN = "parse_error"


# The one schema of a results line (:mod:`~airflow_provider_batches.result_lines`), with the answer.
_Usage = Usage
_Message = ContentMessage
_Line = ResultLine[ContentMessage]

_decode_lines = msgspec.json.Decoder(list[_Line]).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.encode


def result_schema(structured: StructuredOutput | None = None) -> pa.Schema:
    """The explicit schema of every Parquet file of a job (with ``parsed``/``parse_error`` given a schema)."""
    import pyarrow as pa

    fields = [
        pa.field(name, pa.type_for_alias(kind), nullable=nullable) for name, kind, nullable, _ in COLUMNS
    ]
    if structured is not None:
        fields.append(pa.field(PARSED_COLUMN, parsed_type(structured.json_schema)))
        fields.append(pa.field(PARSE_ERROR_COLUMN, pa.string()))
    return pa.schema(fields)


def schema_description(schema: pa.Schema) -> list[dict[str, Any]]:
    """The schema as the manifest records it: name, type and nullability of every column."""
    return [{"name": f.name, "type": _bounded(str(f.type)), "nullable": f.nullable} for f in schema]


def _bounded(text: str, limit: int = 1_000) -> str:
    """A column's type as the manifest says it: the Parquet file has it whole."""
    return text if len(text) <= limit else text[:limit] + "..."


# -- typed columns from a JSON schema -------------------------------------------------------------


MAX_PARSED_FIELDS = 1_000
"""The most struct fields, list items and scalars the ``parsed`` column may have, all nesting levels
counted: a schema that expands to more (shared definitions used many times over) is refused when the
operator is built, not after hours of typing rows."""


def parsed_type(json_schema: Mapping[str, Any]) -> pa.DataType:
    """The arrow type of an answer: objects become structs, arrays lists, scalars their type.

    Whatever has no single type (a union of several, an object without properties, a recursive
    reference) is kept as a JSON string, so no answer is ever lost to the typing.
    """
    return parsed_shape(json_schema).arrow


def parsed_shape(json_schema: Mapping[str, Any]) -> _Shape:
    """The shape of the ``parsed`` column, without pyarrow (cheap enough to check when a DAG is parsed);
    ValueError when it would have more than :data:`MAX_PARSED_FIELDS` fields."""
    return _Shape.of(json_schema, json_schema, depth=0, path=frozenset(), budget=[MAX_PARSED_FIELDS])


@dataclass
class _Shape:
    """A column's shape and how a JSON value is converted to it (``json``: encoded as a JSON string)."""

    kind: str  # "scalar", "json", "struct" or "list"
    scalar: str = "string"
    fields: dict[str, _Shape] = field(default_factory=dict)
    item: _Shape | None = None

    @classmethod
    def of(
        cls, node: Any, root: Mapping[str, Any], depth: int, path: frozenset[str], budget: list[int]
    ) -> _Shape:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(
                f"output_schema expands to more than {MAX_PARSED_FIELDS:,} Parquet fields (nested fields "
                "counted, shared definitions once per use): use output_format='jsonl', or a smaller schema"
            )
        node, refs = _resolve(node, root)
        if depth > 32 or not isinstance(node, Mapping) or not refs.isdisjoint(path):
            return cls("json")  # too deep, not a schema, or recursive: a JSON string column
        path = path | refs
        kind = node.get("type")
        variants = node.get("anyOf") or node.get("oneOf")
        if isinstance(kind, list):
            variants = [{**node, "type": one} for one in kind]
        if variants:
            typed = [v for v in variants if not _is_null(_resolve(v, root)[0])]
            if len(typed) == 1:
                return cls.of(typed[0], root, depth + 1, path, budget)
            return cls("json")
        if kind is None and "enum" in node and all(isinstance(v, str) for v in node["enum"]):
            kind = "string"
        if kind == "object" and isinstance(node.get("properties"), Mapping) and node["properties"]:
            fields = {
                name: cls.of(sub, root, depth + 1, path, budget) for name, sub in node["properties"].items()
            }
            return cls("struct", fields=fields)
        if kind == "array" and isinstance(node.get("items"), Mapping):
            return cls("list", item=cls.of(node["items"], root, depth + 1, path, budget))
        if kind in _SCALARS:
            return cls("scalar", scalar=kind)
        return cls("json")

    @property
    def arrow(self) -> Any:
        import pyarrow as pa

        if self.kind == "struct":
            return pa.struct([pa.field(name, shape.arrow) for name, shape in self.fields.items()])
        if self.kind == "list":
            assert self.item is not None
            return pa.list_(self.item.arrow)
        return getattr(pa, _SCALARS[self.scalar])() if self.kind == "scalar" else pa.string()

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "json":
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if self.kind == "struct":
            if not isinstance(value, Mapping):
                return None
            return {name: shape.convert(value.get(name)) for name, shape in self.fields.items()}
        if self.kind == "list":
            assert self.item is not None
            return [self.item.convert(v) for v in value] if isinstance(value, list) else None
        return value


_SCALARS = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool_"}


def _is_null(node: Any) -> bool:
    return isinstance(node, Mapping) and node.get("type") == "null"


def _resolve(node: Any, root: Mapping[str, Any]) -> tuple[Any, frozenset[str]]:
    """Follow a local ``$ref`` (``#/$defs/Name``, as Pydantic writes nested models); also the refs
    followed, so that a reference back into itself is seen."""
    seen: list[str] = []
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and len(seen) < 32:
        seen.append(node["$ref"])
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        node = target
    return node, frozenset(seen)


# -- rows -----------------------------------------------------------------------------------------


class RowBuffer:
    """Columns of the rows not yet written, filled line by line; ``nbytes`` counts their input bytes."""

    def __init__(
        self,
        schema: pa.Schema,
        structured: StructuredOutput | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.schema = schema
        self.prices = prices
        self.structured = structured
        self._parsed_shape = parsed_shape(structured.json_schema) if structured else None
        self._prices: dict[str, Any] = {}
        self.nbytes = 0
        self.columns: dict[str, list[Any]] = {name: [] for name in schema.names}

    def __len__(self) -> int:
        return len(self.columns["custom_id"])

    def add_lines(
        self, lines: list[bytes], batch_id: str, round_number: int | None
    ) -> list[tuple[str, str, bytes]]:
        """Append the rows of result lines (decoded in one call); ``(custom_id, reason, line)`` of each
        answer that does not match the output schema."""
        try:
            parsed = _decode_lines(b"[" + b",".join(lines) + b"]")
        except msgspec.ValidationError:  # some line has an unexpected shape: decode one at a time
            parsed = [_decode_row(line) for line in lines]
        invalid = []
        for row, line in zip(parsed, lines, strict=True):
            problem = self._add(row, line, batch_id, round_number)
            if problem is not None:
                invalid.append((row.custom_id, problem, line))
        return invalid

    def _add(self, parsed: _Line, raw: bytes, batch_id: str, round_number: int | None) -> str | None:
        result = parsed.result
        message = result.message if result.type == "succeeded" else None
        usage = message.usage if message is not None else None
        error = result.error.error if result.error is not None else None
        columns = self.columns
        columns["custom_id"].append(parsed.custom_id)
        columns["batch_id"].append(batch_id)
        columns["round"].append(round_number)
        columns["result_type"].append(result.type)
        columns["model"].append(message.model if message else None)
        columns["stop_reason"].append(message.stop_reason if message else None)
        columns["text"].append(_text(message))
        columns["tool_calls"].append(_tool_calls(message))
        columns["input_tokens"].append(usage.input_tokens if usage else None)
        columns["output_tokens"].append(usage.output_tokens if usage else None)
        columns["cache_creation_input_tokens"].append(usage.cache_creation_input_tokens if usage else None)
        columns["cache_read_input_tokens"].append(usage.cache_read_input_tokens if usage else None)
        columns["cost_usd"].append(self._cost(message.model if message else None, usage))
        columns["error_type"].append(error.type if error else None)
        columns["error_message"].append(error.message if error else None)
        columns["raw"].append(raw)  # bytes: viewed as UTF-8 strings when taken (JSON is UTF-8)
        self.nbytes += len(raw)
        if self.structured is None:
            return None
        value, problem = parse_answer(self.structured, raw) if message is not None else (None, None)
        assert self._parsed_shape is not None
        columns[PARSED_COLUMN].append(self._parsed_shape.convert(value))
        columns[PARSE_ERROR_COLUMN].append(problem)
        return problem

    def take(self) -> pa.RecordBatch:
        """The buffered rows as one record batch of the schema; the buffer is empty afterwards."""
        import pyarrow as pa

        arrays = [
            pa.array(self.columns[f.name], type=pa.binary()).view(f.type)
            if f.name == "raw"
            else pa.array(self.columns[f.name], type=f.type)
            for f in self.schema
        ]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self.columns = {name: [] for name in self.schema.names}
        self.nbytes = 0
        return batch

    def _cost(self, model: str | None, usage: _Usage | None) -> float | None:
        if model is None or usage is None:
            return None
        if model not in self._prices:
            self._prices[model] = price_for(model, self.prices)
        price = self._prices[model]
        if price is None:
            return None
        return usage_cost_usd(
            price,
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            cache_creation_1h_input_tokens=(usage.cache_creation.ephemeral_1h_input_tokens or 0)
            if usage.cache_creation is not None
            else 0,
        )


def _decode_row(line: bytes | memoryview) -> _Line:
    """The fields of a row; a line whose message has unexpected shapes keeps its identity and raw JSON."""
    return decode_line(line, decoder=CONTENT_DECODER)


def parse_answer(structured: StructuredOutput, line: bytes) -> tuple[Any, str | None]:
    """``(validated answer, None)`` or ``(None, reason)`` for a succeeded result line."""
    try:
        message = _decode_any(line)["result"]["message"]
        return structured.parse(message), None
    except InvalidOutputError as exc:
        return None, str(exc)


def _text(message: _Message | None) -> str | None:
    if message is None:
        return None
    texts = [block.text for block in message.content if block.type == "text" and block.text is not None]
    return "".join(texts) if texts else None


def _tool_calls(message: _Message | None) -> str | None:
    if message is None:
        return None
    calls = [
        {"id": block.id, "name": block.name, "input": block.input}
        for block in message.content
        if block.type == "tool_use"
    ]
    return _encode(calls).decode() if calls else None
