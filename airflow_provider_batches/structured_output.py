"""Structured output: one schema (a Pydantic model or a JSON schema) for every request and answer.

The create operator puts the schema into each request before validation (``output_config.format``
where the model supports it, otherwise a forced tool call), and the results transfer reads the
answer back out of the message, validates it and hands on the parsed value. Both sides use
:class:`StructuredOutput`, so the request form and the answer form are decided in one place.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from airflow_provider_batches.requests import RequestSource

#: The tool the answer is forced into on models without ``output_config`` structured outputs.
STRUCTURED_TOOL_NAME = "structured_output"
STRUCTURED_TOOL_DESCRIPTION = "Give the answer as this tool's input: it must match the input schema."

#: ``claude-<family>-<major>[-<minor>]``: the minor version has one or two digits (a date has eight).
_MODEL_VERSION = re.compile(r"^claude-[a-z]+-(\d+)(?:-(\d{1,2}))?(?:-|$)")
#: The first models with ``output_config.format`` (structured outputs); later versions have it too.
_FIRST_STRUCTURED = {(4, 1): ("claude-opus-",), (4, 5): ("claude-opus-", "claude-sonnet-", "claude-haiku-")}

MAX_SCHEMA_BYTES = 256 * 1024
"""The largest output schema accepted (its strings and keys): it goes into every request of the job."""
MAX_SCHEMA_DEPTH = 64
"""The deepest nesting of the schema document (a nested object property is two levels)."""
MAX_SCHEMA_NODES = 20_000
"""The most values (objects, lists, strings, numbers) in the schema document."""

OutputSchema = type[BaseModel] | Mapping[str, Any]
RequestForm = Literal["output_config", "tool"]


class InvalidOutputError(ValueError):
    """An answer that does not match the output schema; the message says why."""


def request_form(model: str) -> RequestForm:
    """``output_config`` on models with structured outputs (Opus 4.1, 4.5 family, later), else ``tool``."""
    match = _MODEL_VERSION.match(model)
    if match is None:
        return "tool"
    version = (int(match.group(1)), int(match.group(2) or 0))
    if version >= (4, 5):
        return "output_config"
    families = _FIRST_STRUCTURED.get(version, ())
    return "output_config" if model.startswith(families) else "tool"


@dataclass(frozen=True)
class StructuredOutput:
    """The schema of every answer of a job; ``model`` is set when it came from a Pydantic class."""

    json_schema: Mapping[str, Any]
    model: type[BaseModel] | None = None

    @classmethod
    def of(cls, output_schema: OutputSchema | StructuredOutput) -> StructuredOutput:
        """Accept a Pydantic model class or a JSON schema dict of an object, or refuse it clearly."""
        if isinstance(output_schema, StructuredOutput):
            return output_schema
        if isinstance(output_schema, type) and issubclass(output_schema, BaseModel):
            json_schema = output_schema.model_json_schema()  # recursion stays a $ref: finite
            check_schema_bounds(json_schema)
            return cls(json_schema, output_schema)
        if not isinstance(output_schema, Mapping):
            raise ValueError(
                f"output_schema must be a Pydantic model class or a JSON schema dict, "
                f"got {type(output_schema).__name__}"
            )
        if output_schema.get("type") != "object":
            raise ValueError(
                'output_schema must describe an object ({"type": "object", "properties": {...}}): '
                "answers are objects, so that their fields can become columns"
            )
        check_schema_bounds(output_schema)
        from jsonschema.exceptions import SchemaError

        try:
            _validator_class(output_schema).check_schema(output_schema)
        except SchemaError as exc:
            raise ValueError(f"output_schema is not a valid JSON schema: {exc.message}") from None
        return cls(copy.deepcopy(dict(output_schema)))

    def reference(self) -> dict[str, Any]:
        """What the manifest records of the schema: a digest and the title, never the schema itself
        (bounded, whatever the schema's size)."""
        canonical = json.dumps(self.json_schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        title = self.json_schema.get("title")
        return {
            "sha256": hashlib.sha256(canonical.encode()).hexdigest(),
            "title": title[:200] if isinstance(title, str) else None,
        }

    # -- requests ---------------------------------------------------------------------------------

    @cached_property
    def strict_schema(self) -> dict[str, Any]:
        """The schema for ``output_config.format``: every object closed (``additionalProperties: false``)."""
        schema = copy.deepcopy(dict(self.json_schema))
        _close_objects(schema)
        return schema

    def apply(self, params: Mapping[str, Any], model: str) -> dict[str, Any]:
        """``params`` asking for an answer in this schema; ValueError if the request asks otherwise."""
        rewritten = dict(params)
        if request_form(model) == "output_config":
            given = rewritten.get("output_config") or {}
            if not isinstance(given, Mapping):
                raise ValueError(f"params.output_config must be an object, got {type(given).__name__}")
            output_config = dict(given)
            if output_config.get("format") is not None:
                raise ValueError(
                    "params.output_config.format is already set; remove it or drop output_schema"
                )
            output_config["format"] = {"type": "json_schema", "schema": self.strict_schema}
            rewritten["output_config"] = output_config
            return rewritten
        if rewritten.get("tool_choice") is not None:
            raise ValueError("params.tool_choice is already set; remove it or drop output_schema")
        given_tools = rewritten.get("tools") or []
        if not isinstance(given_tools, list):
            raise ValueError(f"params.tools must be a list, got {type(given_tools).__name__}")
        tools = list(given_tools)
        if any(isinstance(tool, Mapping) and tool.get("name") == STRUCTURED_TOOL_NAME for tool in tools):
            raise ValueError(f"params.tools already has a tool named {STRUCTURED_TOOL_NAME!r}; rename it")
        tools.append(
            {
                "name": STRUCTURED_TOOL_NAME,
                "description": STRUCTURED_TOOL_DESCRIPTION,
                "input_schema": dict(self.json_schema),
            }
        )
        rewritten["tools"] = tools
        rewritten["tool_choice"] = {"type": "tool", "name": STRUCTURED_TOOL_NAME}
        return rewritten

    # -- answers ----------------------------------------------------------------------------------

    def parse(self, message: Mapping[str, Any]) -> Any:
        """The validated answer of a succeeded message (JSON-compatible), or InvalidOutputError saying why."""
        return self.validate(answer_value(message))

    def validate(self, value: Any) -> Any:
        if self.model is not None:
            try:
                return self.model.model_validate(value).model_dump(mode="json")
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "(root)"
                raise InvalidOutputError(f"{where}: {first['msg']}") from None
        error = _best_error(self._validator, value)
        if error is not None:
            where = ".".join(str(part) for part in error.absolute_path) or "(root)"
            raise InvalidOutputError(f"{where}: {error.message}")
        return value

    @cached_property
    def _validator(self) -> Any:
        return _validator_class(self.json_schema)(self.json_schema)


def check_schema_bounds(schema: Any) -> None:
    """Refuse a schema document too deep, too big or too broad, before anything walks it whole: in
    bounded time and memory (one pass that stops at the first bound passed)."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    nodes, size = 1, 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(
                f"output_schema is nested more than {MAX_SCHEMA_DEPTH} levels deep: flatten it "
                "(a recursive model stays a $ref and is fine)"
            )
        if isinstance(node, (Mapping, list, tuple)):
            nodes += len(node)  # counted before walked: a million keys are refused without a look
        if nodes > MAX_SCHEMA_NODES:
            raise ValueError(f"output_schema has more than {MAX_SCHEMA_NODES:,} values: use a smaller schema")
        if isinstance(node, Mapping):
            size += sum(len(key) if isinstance(key, str) else 8 for key in node)
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((value, depth + 1) for value in node)
        else:
            size += len(node) if isinstance(node, str) else 8
        if size > MAX_SCHEMA_BYTES:
            raise ValueError(
                f"output_schema is larger than {MAX_SCHEMA_BYTES // 1024} KiB; it goes into every request: "
                "use a smaller schema"
            )


def answer_value(message: Mapping[str, Any]) -> Any:
    """The answer as JSON: the forced tool call's input, else the text blocks parsed as one JSON value."""
    content = message.get("content") or []
    for block in content:
        if (
            isinstance(block, Mapping)
            and block.get("type") == "tool_use"
            and block.get("name") == STRUCTURED_TOOL_NAME
        ):
            return block.get("input")
    text = "".join(
        block.get("text", "")
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text"
    )
    if message.get("stop_reason") == "max_tokens":
        raise InvalidOutputError(
            "the answer was cut at max_tokens (stop_reason max_tokens); raise max_tokens"
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidOutputError(f"the answer is not JSON ({exc})") from None


class StructuredRequestSource(RequestSource):
    """A request source whose requests all ask for ``structured`` answers: the one validator rewrites
    each valid request's params as it checks them (:attr:`RequestSource.params_rewrite`), so a line is
    read and checked once, not once to rewrite and again to check."""

    def __init__(self, source: RequestSource, structured: StructuredOutput) -> None:
        super().__init__(
            requests=source.requests,
            requests_path=source.requests_path,
            requests_conn_id=source.requests_conn_id,
            model=source.model,
        )
        self.structured = structured
        self.params_rewrite = self._rewrite

    def _rewrite(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.structured.apply(params, params["model"])


def with_output_schema(
    source: RequestSource, output_schema: OutputSchema | StructuredOutput | None
) -> RequestSource:
    """``source`` asking for structured answers when a schema is given (the create operator's one call)."""
    if output_schema is None:
        return source
    return StructuredRequestSource(source, StructuredOutput.of(output_schema))


def _close_objects(node: Any) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _close_objects(value)
        if node.get("type") == "object":
            node.setdefault("additionalProperties", False)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def _validator_class(schema: Mapping[str, Any]) -> Any:
    from jsonschema.validators import validator_for

    return validator_for(schema)


def _best_error(validator: Any, value: Any) -> Any:
    from jsonschema.exceptions import best_match

    return best_match(validator.iter_errors(value))
