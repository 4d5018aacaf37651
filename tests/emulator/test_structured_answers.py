"""Emulator answers asking for structured output: JSON valid for the schema, or invalid on demand."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from airflow_provider_batches.emulator.answers import build_message
from airflow_provider_batches.emulator.structured import example_value

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham", "eggs"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": 3, "maximum": 9},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 3},
        "when": {"type": "string", "format": "date"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "owner": {"$ref": "#/$defs/Owner"},
    },
    "required": ["label", "score", "count", "flag", "tags", "owner"],
    "$defs": {"Owner": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
}


def ask_output_config(text: str = "classify this") -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }


def ask_tool(text: str = "classify this") -> dict[str, Any]:
    return {
        "model": "claude-3-5-haiku",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        "tools": [{"name": "answer", "input_schema": SCHEMA}],
        "tool_choice": {"type": "tool", "name": "answer"},
    }


def answer_value(block: dict[str, Any]) -> Any:
    """The JSON of a text or tool_use block (ValueError when the text is not JSON)."""
    return json.loads(block["text"]) if block["type"] == "text" else block["input"]


def answer(params: dict[str, Any]) -> dict[str, Any]:
    return build_message(params, message_id="msg_x", service_tier="batch")


def test_an_output_config_answer_is_json_text_valid_for_the_schema() -> None:
    message = answer(ask_output_config())
    jsonschema.validate(json.loads(message["content"][0]["text"]), SCHEMA)
    assert message["stop_reason"] == "end_turn"


def test_a_forced_tool_answer_is_a_tool_use_block_valid_for_the_schema() -> None:
    message = answer(ask_tool())
    (block,) = message["content"]
    assert (block["type"], block["name"], message["stop_reason"]) == ("tool_use", "answer", "tool_use")
    jsonschema.validate(block["input"], SCHEMA)


def test_the_same_request_always_gets_the_same_answer() -> None:
    assert answer(ask_output_config()) == answer(ask_output_config())


def test_output_tokens_count_the_json_answer() -> None:
    message = answer(ask_output_config())
    assert message["usage"]["output_tokens"] == -(-len(message["content"][0]["text"].encode()) // 4)


@pytest.mark.parametrize("params", [ask_output_config, ask_tool])
def test_the_invalid_output_marker_makes_the_answer_break_its_schema(params: Any) -> None:
    message = answer(params("classify this [emulator:invalid_output]"))
    block = message["content"][0]
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(answer_value(block), SCHEMA)


@pytest.mark.parametrize("seed", ["a", "b", "c", "d"])
def test_generated_values_stay_within_bounds(seed: str) -> None:
    value = example_value(SCHEMA, seed)
    jsonschema.validate(value, SCHEMA)
    assert len(value["tags"]) == 3
