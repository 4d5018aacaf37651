"""StructuredOutput: how a schema goes into a request, and how an answer is checked against it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.requests import RequestSource, prepare_job
from airflow_provider_batches.structured_output import (
    STRUCTURED_TOOL_NAME,
    InvalidOutputError,
    StructuredOutput,
    request_form,
    with_output_schema,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}, "score": {"type": "number"}},
    "required": ["label", "score"],
}


class Verdict(BaseModel):
    label: str
    score: float


def params(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **extra}


def text_message(text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "stop_reason": stop_reason}


@pytest.mark.parametrize(
    ("model", "form"),
    [
        ("claude-sonnet-4-5", "output_config"),
        ("claude-sonnet-4-5-20250929", "output_config"),
        ("claude-haiku-4-5", "output_config"),
        ("claude-opus-4-1-20250805", "output_config"),
        ("claude-opus-4-6", "output_config"),
        ("claude-sonnet-5", "output_config"),
        ("claude-fable-5-2", "output_config"),
        ("claude-sonnet-4-20250514", "tool"),
        ("claude-sonnet-4-1", "tool"),
        ("claude-opus-4-20250514", "tool"),
        ("claude-3-5-haiku-20241022", "tool"),
        ("claude-emulator-test", "tool"),
    ],
)
def test_the_request_form_follows_the_models_structured_output_support(model: str, form: str) -> None:
    assert request_form(model) == form


def test_a_supporting_model_gets_the_schema_as_output_config_format() -> None:
    applied = StructuredOutput.of(SCHEMA).apply(params("claude-sonnet-4-5"), "claude-sonnet-4-5")
    assert applied["output_config"]["format"] == {
        "type": "json_schema",
        "schema": {**SCHEMA, "additionalProperties": False},
    }
    assert "tools" not in applied


def test_an_older_model_gets_a_forced_tool_call_with_the_schema_as_input() -> None:
    applied = StructuredOutput.of(SCHEMA).apply(params("claude-3-5-haiku"), "claude-3-5-haiku")
    assert applied["tools"][-1]["input_schema"] == SCHEMA
    assert applied["tool_choice"] == {"type": "tool", "name": STRUCTURED_TOOL_NAME}


def test_a_request_that_already_forces_a_tool_is_refused() -> None:
    with pytest.raises(ValueError, match=r"params.tool_choice is already set"):
        StructuredOutput.of(SCHEMA).apply(
            params("claude-3-5-haiku", tool_choice={"type": "any"}), "claude-3-5-haiku"
        )


def test_a_pydantic_model_gives_its_json_schema() -> None:
    assert StructuredOutput.of(Verdict).json_schema["required"] == ["label", "score"]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string"}, "must describe an object"),
        ({"type": "object", "properties": {"a": {"type": "strange"}}}, "not a valid JSON schema"),
        ("{}", "must be a Pydantic model class or a JSON schema dict"),
    ],
)
def test_an_unusable_schema_is_refused(schema: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StructuredOutput.of(schema)


def test_a_valid_text_answer_is_parsed() -> None:
    parsed = StructuredOutput.of(SCHEMA).parse(text_message('{"label": "spam", "score": 0.9}'))
    assert parsed == {"label": "spam", "score": 0.9}


def test_a_forced_tool_answer_is_read_from_the_tool_input() -> None:
    message = {
        "content": [
            {"type": "tool_use", "name": STRUCTURED_TOOL_NAME, "input": {"label": "ham", "score": 1}}
        ],
        "stop_reason": "tool_use",
    }
    assert StructuredOutput.of(SCHEMA).parse(message) == {"label": "ham", "score": 1}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (text_message('{"label": "spam"'), "not JSON"),
        (text_message('{"label": "eggs", "score": 1}'), "label: 'eggs' is not one of"),
        (text_message('{"label": "spam"}'), "'score' is a required property"),
        (text_message('{"label": "spam", "score": 1}', "max_tokens"), "cut at max_tokens"),
    ],
)
def test_an_invalid_answer_says_why(message: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidOutputError, match=reason):
        StructuredOutput.of(SCHEMA).parse(message)


def test_a_pydantic_model_validates_and_names_the_field() -> None:
    with pytest.raises(InvalidOutputError, match="score: Input should be a valid number"):
        StructuredOutput.of(Verdict).parse(text_message('{"label": "x", "score": "high"}'))


def test_every_request_of_a_file_source_asks_for_the_schema(tmp_path: Any) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        '{"custom_id": "a", "params": {"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}}\n'
    )
    source = with_output_schema(RequestSource(requests_path=str(path), model="claude-haiku-4-5"), SCHEMA)
    (request,) = list(source.iter_requests())
    assert request["params"]["output_config"]["format"]["type"] == "json_schema"
    assert prepare_job(source).request_count == 1


def test_a_conflicting_request_is_named_with_its_custom_id_before_anything_is_sent() -> None:
    source = RequestSource(
        requests=[{"custom_id": "clash", "params": params("claude-sonnet-4-5", output_config={"format": {}})}]
    )
    with pytest.raises(
        RequestValidationError, match=r"requests\[0\] \(custom_id 'clash'\).*output_config.format"
    ):
        prepare_job(with_output_schema(source, SCHEMA))
