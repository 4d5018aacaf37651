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

from airflow_provider_batches.pricing import price_for, usage_costs_usd
from airflow_provider_batches.result_lines import (
    CONTENT_DECODER,
    ContentMessage,
    ResultLine,
    decode_line,
    split_lines,
)
from airflow_provider_batches.structured_output import InvalidOutputError, StructuredOutput

if TYPE_CHECKING:
    import pyarrow as pa

#: (name, arrow type name, nullable, meaning): the README's column reference is this table.
COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("custom_id", "string", False, "the request's custom_id"),
    ("batch_id", "string", False, "the batch the result came from"),
    ("round", "int32", True, "the round that answered: 1, or the re-drive or resume round"),
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
#: The columns of few distinct values, written dictionary-encoded; the others (ids, texts, raw lines,
#: the ``parsed`` answers) are unique per row, where a dictionary costs time and memory and saves nothing.
DICTIONARY_COLUMNS: tuple[str, ...] = (
    "batch_id",
    "round",
    "result_type",
    "model",
    "stop_reason",
    "error_type",
)
PARSED_COLUMN = "parsed"
PARSE_ERROR_COLUMN = "parse_error"


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

#: What of a result line the flattened columns read: pyarrow's JSON reader parses only these fields
#: (anything else, such as a tool call's free-form ``input``, is skipped), straight into arrow memory.
_TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_ONE_HOUR = "cache_creation_1h_input_tokens"
_USAGE = "_usage"  # whether a succeeded row has a usage (else its cost is null): not a file column


def _line_type() -> pa.Schema:
    import pyarrow as pa

    string, int64 = pa.string(), pa.int64()
    block = pa.struct([("type", string), ("text", string)])
    usage = pa.struct(
        [(name, int64) for name in _TOKENS]
        + [("cache_creation", pa.struct([("ephemeral_1h_input_tokens", int64)]))]
    )
    message = pa.struct(
        [("model", string), ("stop_reason", string), ("content", pa.list_(block)), ("usage", usage)]
    )
    error = pa.struct([("error", pa.struct([("type", string), ("message", string)]))])
    result = pa.struct([("type", string), ("message", message), ("error", error)])
    return pa.schema([("custom_id", string), ("result", result)])


# The one schema of a results line (:mod:`~airflow_provider_batches.result_lines`), with the answer.
_Message = ContentMessage
_Line = ResultLine[ContentMessage]

_decode_lines = msgspec.json.Decoder(list[_Line]).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.encode


class RowBuffer:
    """Result lines not yet written, kept as the bytes received (one copy); :meth:`take` turns them
    into columns in one pass (pyarrow's JSON reader and compute kernels: no Python object per field)."""

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
        self._clear()

    def _clear(self) -> None:
        self._data = bytearray()
        self._sources: list[tuple[str, int | None, int]] = []  # (batch_id, round, first byte) in order
        self._parsed: list[Any] = []
        self._problems: list[str | None] = []

    @property
    def nbytes(self) -> int:
        """The input bytes buffered (what bounds a row group's memory)."""
        return len(self._data)

    def add(
        self, lines: bytes | memoryview, batch_id: str, round_number: int | None
    ) -> list[tuple[str, str, bytes]]:
        """Buffer LF-terminated result lines; ``(custom_id, reason, line)`` of each answer that does not
        match the output schema."""
        if not self._sources or self._sources[-1][:2] != (batch_id, round_number):
            self._sources.append((batch_id, round_number, len(self._data)))
        start = len(self._data)
        self._data += lines
        if self._data and not self._data.endswith(b"\n"):
            self._data += b"\n"
        if self.structured is None:
            return []
        return self._parse_answers(split_lines(memoryview(self._data)[start:]))

    def add_lines(
        self, lines: list[bytes], batch_id: str, round_number: int | None
    ) -> list[tuple[str, str, bytes]]:
        """:meth:`add` for separate lines (without their LF)."""
        return self.add(b"\n".join([*lines, b""]), batch_id, round_number) if lines else []

    def _parse_answers(self, lines: list[bytes]) -> list[tuple[str, str, bytes]]:
        """The ``parsed`` values of succeeded answers (one at a time: each is validated)."""
        assert self.structured is not None
        assert self._parsed_shape is not None
        invalid = []
        for line in map(bytes, lines):
            value, problem = None, None
            if _is_answer(line):
                value, problem = parse_answer(self.structured, line)
                if problem is not None:
                    invalid.append((_decode_row(line).custom_id, problem, line))
            self._parsed.append(self._parsed_shape.convert(value))
            self._problems.append(problem)
        return invalid

    def take(self) -> pa.RecordBatch:
        """The buffered rows as one record batch of the schema; the buffer is empty afterwards."""
        import pyarrow as pa
        import pyarrow.compute as pc

        data, sources = self._data, self._sources
        lines = _lines(data)
        if pc.any(pc.equal(pc.binary_length(lines), 0)).as_py():  # blank lines: never sent by the writer
            data, kept, sources = self._without_blank_lines()
            lines = pa.array(kept, pa.binary())
        columns = _arrow_columns(data, lines) or _python_columns(lines.to_pylist())
        columns["cost_usd"] = self._costs(columns)
        columns["raw"] = lines.view(pa.string())  # JSON is UTF-8
        rows = self._rows_per_source(data, sources, len(lines))
        columns["batch_id"] = pa.concat_arrays(
            [pa.repeat(pa.scalar(batch_id, pa.string()), count) for (batch_id, _, _), count in rows]
        )
        columns["round"] = pa.concat_arrays(
            [pa.repeat(pa.scalar(number, pa.int32()), count) for (_, number, _), count in rows]
        )
        if self.structured is not None:
            columns[PARSED_COLUMN] = self._parsed
            columns[PARSE_ERROR_COLUMN] = self._problems
        arrays = [
            columns[f.name] if isinstance(columns[f.name], pa.Array) else pa.array(columns[f.name], f.type)
            for f in self.schema
        ]
        self._clear()
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    @staticmethod
    def _rows_per_source(
        data: bytearray, sources: list[tuple[str, int | None, int]], rows: int
    ) -> list[tuple[tuple[str, int | None, int], int]]:
        """How many of the rows each source (batch and round) gave: the lines of its bytes."""
        ends = [start for _, _, start in sources[1:]] + [len(data)]
        counts = [data.count(b"\n", source[2], end) for source, end in zip(sources[:-1], ends, strict=False)]
        return list(zip(sources, [*counts, rows - sum(counts)], strict=True))

    def _without_blank_lines(self) -> tuple[bytearray, list[bytes], list[tuple[str, int | None, int]]]:
        ends = [start for _, _, start in self._sources[1:]] + [len(self._data)]
        data, lines, sources = bytearray(), [], []
        for (batch_id, number, start), end in zip(self._sources, ends, strict=True):
            sources.append((batch_id, number, len(data)))
            kept = split_lines(memoryview(self._data)[start:end])
            lines += kept
            data += b"".join(line + b"\n" for line in kept)
        return data, lines, sources

    def _costs(self, columns: dict[str, Any]) -> pa.Array:
        """``cost_usd``: each model's rows priced at once by :func:`usage_costs_usd` (null if unpriced)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        model = columns["model"]
        cost = pa.nulls(len(model), pa.float64())
        for name in pc.unique(model).to_pylist():
            if name is None:
                continue
            if name not in self._prices:
                self._prices[name] = price_for(name, self.prices)
            price = self._prices[name]
            if price is None:
                continue
            rows = pc.fill_null(pc.and_(pc.equal(model, name), columns[_USAGE]), False)
            tokens = {token: columns[token] for token in (*_TOKENS, _ONE_HOUR)}
            cost = pc.if_else(rows, usage_costs_usd(price, **tokens), cost)
        return cost


def _lines(data: bytearray) -> pa.Array:
    """The LF-terminated lines of ``data``, without their LF, as one binary array (copied once, by
    pyarrow: no Python object per line)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(data) >= 2**31:  # past 32-bit offsets: a row group of lines this long is not made
        raise ValueError(f"{len(data):,} bytes of result lines in one row group: at most 2 GiB")
    offsets = pa.array([0, len(data)], pa.int32()).buffers()[1]
    whole = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(data)])
    parts = pc.split_pattern(whole, pattern="\n").values
    return parts.slice(0, len(parts) - 1)  # after the last LF


def _arrow_columns(data: bytearray, lines: pa.Array) -> dict[str, Any] | None:
    """The flattened columns of LF-terminated result lines (``lines``: the same, one per item), by
    pyarrow's JSON reader and compute kernels; None when a line has a field of an unexpected type (the
    caller takes them one by one)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    rows = len(lines)
    if not rows:
        return None
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=max(len(data), 1 << 16)),
            parse_options=pj.ParseOptions(explicit_schema=_line_type(), unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != rows:
        return None
    result = table.column("result").combine_chunks()
    result_type = pc.struct_field(result, "type")
    succeeded = pc.fill_null(pc.equal(result_type, "succeeded"), False)
    message = pc.struct_field(result, "message")

    def answer(*path: str) -> pa.Array:
        value = pc.struct_field(message, list(path))
        return pc.if_else(succeeded, value, pa.scalar(None, value.type))

    error = pc.struct_field(result, "error")
    columns: dict[str, Any] = {
        "custom_id": table.column("custom_id").combine_chunks(),
        "result_type": result_type,
        "model": answer("model"),
        "stop_reason": answer("stop_reason"),
        **{name: answer("usage", name) for name in _TOKENS},
        _ONE_HOUR: answer("usage", "cache_creation", "ephemeral_1h_input_tokens"),
        _USAGE: pc.and_(succeeded, pc.is_valid(pc.struct_field(message, "usage"))),
        "error_type": pc.struct_field(error, ["error", "type"]),
        "error_message": pc.struct_field(error, ["error", "message"]),
    }
    content = pc.struct_field(message, "content")
    offsets, blocks = content.offsets, content.values
    block_type, block_text = pc.struct_field(blocks, "type"), pc.struct_field(blocks, "text")
    is_text = pc.fill_null(pc.and_(pc.equal(block_type, "text"), pc.is_valid(block_text)), False)
    only_texts = block_text if pc.all(is_text).as_py() is not False else pc.if_else(is_text, block_text, "")
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, only_texts), "")
    has_text = pc.and_(succeeded, pc.greater(_per_list(offsets, is_text), 0))
    columns["text"] = _valid_where(joined, has_text)
    is_tool = pc.fill_null(pc.equal(block_type, "tool_use"), False)
    has_tools = pc.and_(succeeded, pc.greater(_per_list(offsets, is_tool), 0))
    tool_calls: list[str | None] = [None] * rows
    if pc.any(has_tools).as_py():  # their free-form inputs are re-encoded from the line, row by row
        for index in pc.indices_nonzero(has_tools).to_pylist():
            tool_calls[index] = _tool_calls(_decode_row(lines[index].as_py()).result.message)
    columns["tool_calls"] = pa.array(tool_calls, pa.string())
    return columns


def _valid_where(values: pa.Array, valid: pa.Array) -> pa.Array:
    """``values`` where ``valid`` is true, else null: its validity bitmap is ``valid``'s bits (no copy
    of the values; ``valid`` has no nulls)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if valid.offset or values.offset or valid.null_count:
        return pc.if_else(valid, values, pa.scalar(None, values.type))
    return pa.Array.from_buffers(values.type, len(values), [valid.buffers()[1], *values.buffers()[1:]])


def _per_list(offsets: pa.Array, flags: pa.Array) -> pa.Array:
    """How many of each list's items are flagged (``offsets`` as a list array's)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pc.cumulative_sum(flags.cast(pa.int64()))
    before = pa.concat_arrays([pa.array([0], pa.int64()), counts])
    return pc.subtract(pc.take(before, offsets[1:]), pc.take(before, offsets[:-1]))


def _python_columns(lines: list[bytes]) -> dict[str, Any]:
    """The flattened columns line by line (msgspec): a line whose message has unexpected shapes keeps
    its identity, result type and raw JSON, and nulls elsewhere."""
    import pyarrow as pa

    try:
        parsed = _decode_lines(b"[" + b",".join(lines) + b"]")
    except msgspec.ValidationError:
        parsed = [_decode_row(line) for line in lines]
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "custom_id",
            "result_type",
            "model",
            "stop_reason",
            "text",
            "tool_calls",
            *_TOKENS,
            _ONE_HOUR,
            _USAGE,
            "error_type",
            "error_message",
        )
    }
    for row in parsed:
        result = row.result
        message = result.message if result.type == "succeeded" else None
        usage = message.usage if message is not None else None
        cache = usage.cache_creation if usage is not None else None
        error = result.error.error if result.error is not None else None
        columns["custom_id"].append(row.custom_id)
        columns["result_type"].append(result.type)
        columns["model"].append(message.model if message else None)
        columns["stop_reason"].append(message.stop_reason if message else None)
        columns["text"].append(_text(message))
        columns["tool_calls"].append(_tool_calls(message))
        for name in _TOKENS:
            columns[name].append(getattr(usage, name) if usage else None)
        columns[_ONE_HOUR].append(cache.ephemeral_1h_input_tokens if cache else None)
        columns[_USAGE].append(usage is not None)
        columns["error_type"].append(error.type if error else None)
        columns["error_message"].append(error.message if error else None)
    types = {name: pa.int64() for name in (*_TOKENS, _ONE_HOUR)} | {_USAGE: pa.bool_()}
    return {name: pa.array(values, types.get(name, pa.string())) for name, values in columns.items()}


def _is_answer(line: bytes) -> bool:
    """Whether a result line is a succeeded answer (whose message the output schema validates)."""
    result = decode_line(line).result
    return result.type == "succeeded" and result.message is not None


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
