"""Structured answers: JSON generated from the schema a request asks for, the same for the same request.

A request asks for structured output with ``output_config.format`` (``{"type": "json_schema",
"schema": ...}``: the answer is the JSON as text) or a forced tool call (``tool_choice`` of type
``tool`` naming one of ``tools``: the answer is a ``tool_use`` block whose input is the JSON).
``[emulator:invalid_output]`` in the last user message makes the answer break its schema: cut-off
JSON text, or a tool input whose every property has the wrong type.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INVALID_OUTPUT_MARKER = "[emulator:invalid_output]"
_MAX_DEPTH = 8
_FORMATS = {
    "date": "2026-11-22",
    "date-time": "2026-11-22T12:00:00Z",
    "time": "12:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/emulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


@dataclass(frozen=True)
class StructuredAsk:
    """What a request asks for: its schema, and the tool's name when the answer is a forced tool call."""

    schema: Mapping[str, Any]
    tool_name: str | None = None


def structured_ask(params: Mapping[str, Any]) -> StructuredAsk | None:
    """The structured output a request asks for, or None for a free-text answer."""
    output_format = (params.get("output_config") or {}).get("format")
    if isinstance(output_format, Mapping) and output_format.get("type") == "json_schema":
        schema = output_format.get("schema")
        return StructuredAsk(schema) if isinstance(schema, Mapping) else None
    choice = params.get("tool_choice")
    if not isinstance(choice, Mapping) or choice.get("type") != "tool":
        return None
    for tool in params.get("tools") or []:
        if isinstance(tool, Mapping) and tool.get("name") == choice.get("name"):
            schema = tool.get("input_schema")
            return StructuredAsk(schema, str(tool["name"])) if isinstance(schema, Mapping) else None
    return None


def example_value(schema: Mapping[str, Any], seed: str) -> Any:
    """A value valid for ``schema`` (types, enums, consts, required and optional properties, min/max,
    string formats and lengths; not ``pattern``), chosen by ``seed`` where there is a choice."""
    return _Generator(schema, seed).value(schema, "", 0)


def invalid_value(schema: Mapping[str, Any], seed: str) -> Any:
    """A value of the schema's shape whose every property has the wrong type."""
    value = example_value(schema, seed)
    if not isinstance(value, dict) or not value:
        return [value]
    return {key: "not-a-number" if not isinstance(item, str) else 12345 for key, item in value.items()}


def answer_text(ask: StructuredAsk, seed: str, *, invalid: bool) -> str:
    """The text of an ``output_config`` answer: the JSON, or with ``invalid`` its first half."""
    text = json.dumps(example_value(ask.schema, seed), ensure_ascii=False, separators=(",", ":"))
    return text[: max(1, len(text) // 2)] if invalid else text


class _Generator:
    def __init__(self, root: Mapping[str, Any], seed: str) -> None:
        self.root = root
        self.seed = seed

    def _pick(self, path: str, count: int) -> int:
        digest = hashlib.sha256(f"{self.seed}:{path}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % count

    def _resolve(self, node: Any) -> Any:
        for _ in range(_MAX_DEPTH):
            if not (isinstance(node, Mapping) and isinstance(node.get("$ref"), str)):
                break
            target: Any = self.root
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target.get(part) if isinstance(target, Mapping) else None
            node = target
        return node

    def value(self, node: Any, path: str, depth: int) -> Any:
        node = self._resolve(node)
        if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
            return None
        if "const" in node:
            return node["const"]
        if isinstance(node.get("enum"), list) and node["enum"]:
            return node["enum"][self._pick(path, len(node["enum"]))]
        if "default" in node:
            return node["default"]
        variants = node.get("anyOf") or node.get("oneOf")
        if isinstance(variants, list) and variants:
            typed = [v for v in variants if self._resolve(v).get("type") != "null"] or variants
            return self.value(typed[0], path, depth + 1)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in node):
            properties = node.get("properties") or {}
            return {name: self.value(sub, f"{path}.{name}", depth + 1) for name, sub in properties.items()}
        if kind == "array":
            low = int(node.get("minItems", 1))
            count = max(low, min(2, int(node.get("maxItems", 2))))
            return [self.value(node.get("items") or {}, f"{path}[{i}]", depth + 1) for i in range(count)]
        if kind == "integer":
            return self._number(node, path, integer=True)
        if kind == "number":
            return self._number(node, path, integer=False)
        if kind == "boolean":
            return self._pick(path, 2) == 0
        if kind == "null":
            return None
        return self._string(node, path)

    def _number(self, node: Mapping[str, Any], path: str, *, integer: bool) -> int | float:
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        high = node.get("maximum", node.get("exclusiveMaximum", low + 100))
        if "exclusiveMinimum" in node and "minimum" not in node:
            low += 1
        if "exclusiveMaximum" in node and "maximum" not in node:
            high -= 1
        span = max(int(high) - int(low), 0)
        number = int(low) + (self._pick(path, span + 1) if span else 0)
        return number if integer else float(number) + (0.5 if number + 0.5 <= high else 0.0)

    def _string(self, node: Mapping[str, Any], path: str) -> str:
        text = _FORMATS.get(str(node.get("format")), f"emulated {path.lstrip('.') or 'text'}")
        low, high = int(node.get("minLength", 0)), node.get("maxLength")
        if len(text) < low:
            text += "x" * (low - len(text))
        return text[: int(high)] if high is not None else text
