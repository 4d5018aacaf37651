"""Checked before spend: each distinct model is looked up once in the Models API (free), and an unknown
or retired model, or max_tokens above the model's limit, fails before any paid call, naming the lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.model_check import check_models, closest_models
from airflow_provider_batches.models import ModelInfo
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.requests import ModelUsage, SourceLine
from tests.operators.support import batches_created, request, task_context


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", **settings)


def model_calls(emulator: Emulator) -> dict[str, int]:
    return {
        label: sum(statuses.values())
        for label, statuses in emulator.admin.stats()["calls"].items()
        if label.startswith("GET /v1/models")
    }


def paid_calls(emulator: Emulator) -> int:
    return sum(emulator.admin.stats()["calls"].get("POST /v1/messages/batches", {}).values())


def test_a_mistyped_model_fails_before_any_paid_call_naming_the_line_and_the_nearest_model(
    emulator: Emulator, tmp_path: Path
) -> None:
    lines = [request("ok", model="claude-sonnet-4-6"), request("typo", model="claude-sonet-4-6")]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    with pytest.raises(RequestValidationError) as failure:
        create(requests_path=f"file://{path}").execute(task_context())

    message = str(failure.value)
    assert "model 'claude-sonet-4-6' is not a model the API knows" in message
    assert "did you mean claude-sonnet-4-6" in message
    assert "line 2 (custom_id 'typo')" in message
    assert "nothing was sent" in message
    assert paid_calls(emulator) == 0
    assert batches_created(emulator) == 0


def test_each_distinct_model_is_looked_up_once(emulator: Emulator) -> None:
    batch = [request(f"s{index}", model="claude-sonnet-4-6") for index in range(5)]
    batch += [request(f"h{index}", model="claude-haiku-4-5") for index in range(5)]

    create(requests=batch).execute(task_context())

    assert model_calls(emulator) == {
        "GET /v1/models/claude-sonnet-4-6": 1,
        "GET /v1/models/claude-haiku-4-5": 1,
    }


def test_a_retired_model_fails_naming_it_retired_and_a_current_model(emulator: Emulator) -> None:
    with pytest.raises(RequestValidationError) as failure:
        create(requests=[request("old", model="claude-sonnet-4-5")]).execute(task_context())

    message = str(failure.value)
    assert "model 'claude-sonnet-4-5' is retired (deprecated 2026-06-30)" in message
    assert "claude-sonnet-4-6" in message  # the nearest current model
    assert "requests[0] (custom_id 'old')" in message
    assert paid_calls(emulator) == 0


def test_max_tokens_above_the_models_limit_fails_naming_the_line_and_the_limit(emulator: Emulator) -> None:
    batch = [
        request("small", model="claude-haiku-4-5", max_tokens=100),
        request("huge", model="claude-haiku-4-5", max_tokens=100_000),
    ]

    expected = r"requests\[1\] \(custom_id 'huge'\), params.max_tokens: 100,000 is above claude-haiku-4-5's"
    with pytest.raises(RequestValidationError, match=expected + " limit of 64,000"):
        create(requests=batch).execute(task_context())

    assert paid_calls(emulator) == 0


def test_manual_extended_thinking_on_a_model_that_refuses_it_fails_naming_the_line(
    emulator: Emulator,
) -> None:
    batch = [
        request("adaptive", model="claude-sonnet-5", thinking={"type": "adaptive"}),
        request(
            "manual",
            model="claude-sonnet-5",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
        ),
    ]

    with pytest.raises(
        RequestValidationError, match=r"requests\[1\] \(custom_id 'manual'\), params.thinking"
    ):
        create(requests=batch).execute(task_context())

    assert paid_calls(emulator) == 0


def test_non_default_sampling_on_a_model_that_refuses_it_fails_naming_the_line(emulator: Emulator) -> None:
    batch = [
        request("plain", model="claude-haiku-5-5"),
        request("hot", model="claude-haiku-5-5", temperature=0.2),
    ]

    with pytest.raises(
        RequestValidationError, match=r"custom_id 'hot'\), params: claude-haiku-5-5 answers 400"
    ):
        create(requests=batch).execute(task_context())


def test_sampling_parameters_pass_on_models_that_take_them(emulator: Emulator) -> None:
    manifest = create(requests=[request("warm", model="claude-sonnet-4-6", temperature=0.2)]).execute(
        task_context()
    )

    assert manifest["request_counts"]["succeeded"] == 1


def test_check_models_false_sends_without_looking(emulator: Emulator) -> None:
    create(requests=[request("a")], check_models=False).execute(task_context())

    assert model_calls(emulator) == {}


def usage(*custom_ids: str, max_tokens: int = 16) -> ModelUsage:
    used = ModelUsage()
    for number, custom_id in enumerate(custom_ids, start=1):
        used.add(SourceLine(number=number, offset=0, raw=b"{}"), custom_id, {"max_tokens": max_tokens})
    return used


class Answers:
    """A hook stand-in for the unit tests of the check: the Models API's answers, by model."""

    def __init__(self, **infos: ModelInfo) -> None:
        self.infos = infos
        self.looked_up: list[str] = []

    def get_model(self, model: str) -> ModelInfo:
        self.looked_up.append(model)
        return self.infos[model]

    def list_models(self) -> list[ModelInfo]:
        return list(self.infos.values())


def test_a_model_without_batch_support_fails() -> None:
    info = ModelInfo(id="m", max_tokens=1000, capabilities={"batch": {"supported": False}})

    with pytest.raises(RequestValidationError, match="'m' does not support the Message Batches API"):
        check_models(Answers(m=info), {"m": usage("a")}, source="x", log=logging.getLogger())  # type: ignore[arg-type]


def test_the_300k_output_beta_raises_the_limit() -> None:
    info = ModelInfo(id="m", max_tokens=128_000)

    found = check_models(
        Answers(m=info),  # type: ignore[arg-type]
        {"m": usage("a", max_tokens=200_000)},
        source="x",
        betas=["output-300k-2026-03-24"],
        log=logging.getLogger(),
    )

    assert found == {"m": info}


def test_closest_models_suggests_the_typos_fix_first() -> None:
    known = ["claude-sonnet-4-6", "claude-sonnet-5", "claude-opus-4-6", "claude-haiku-4-5"]
    assert closest_models("claude-sonet-4-6", known)[0] == "claude-sonnet-4-6"
    assert closest_models("gpt-4", known) == []


def test_the_source_is_named_in_the_message(emulator: Emulator) -> None:
    with pytest.raises(RequestValidationError, match="the models of 1 inline requests"):
        create(requests=[request("a", model="claude-nope")]).execute(task_context())
