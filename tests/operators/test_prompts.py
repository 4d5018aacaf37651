"""Prompt lists on the create operator, against the emulator: requests built, ids stable, errors named."""

from __future__ import annotations

import re
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import RECORD_KEY
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.prompts import build_prompt_requests
from airflow_provider_batches.proof import PROOF_PREFIX
from tests.operators.support import (
    MODEL,
    FakeTaskStateStore,
    batches_created,
    task_context,
)


def create(prompts: Any, **kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "poll_interval": 0.05, "deferrable": False}
    return AnthropicCreateBatchOperator(task_id="create", prompts=prompts, **{**settings, **kwargs})


def results_by_id(batch_id: str) -> dict[str, Any]:
    """The job's results (the proof request the operator adds left out)."""
    return {
        result.custom_id: result
        for result in AnthropicHook().iter_results(batch_id)
        if not result.custom_id.startswith(PROOF_PREFIX)
    }


def test_string_prompts_become_requests_named_by_position(emulator: Emulator) -> None:
    manifest = create(["What is 2+2?", "Name a colour."]).execute(task_context())

    (batch_id,) = manifest["batch_ids"]
    assert sorted(results_by_id(batch_id)) == ["prompt-0", "prompt-1"]
    assert manifest["request_counts"]["succeeded"] == 2


def test_shared_settings_apply_and_a_prompt_dict_overrides_them() -> None:
    built = build_prompt_requests(
        ["plain", {"prompt": "own", "custom_id": "mine", "max_tokens": 99, "system": "terse"}],
        max_tokens=16,
        system="helpful",
        params={"temperature": 0.5},
    )

    assert built == [
        {
            "custom_id": "prompt-0",
            "params": {
                "temperature": 0.5,
                "max_tokens": 16,
                "system": "helpful",
                "messages": [{"role": "user", "content": "plain"}],
            },
        },
        {
            "custom_id": "mine",
            "params": {
                "temperature": 0.5,
                "max_tokens": 99,
                "system": "terse",
                "messages": [{"role": "user", "content": "own"}],
            },
        },
    ]


def test_a_prompt_dict_may_give_a_whole_conversation() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]

    (built,) = build_prompt_requests([{"messages": messages}], max_tokens=8)

    assert built["params"]["messages"] == messages


def test_the_same_prompts_give_the_same_job_fingerprint() -> None:
    prompts = ["a", {"prompt": "b", "temperature": 0}]

    assert create(prompts).prepare().fingerprint == create(list(prompts)).prepare().fingerprint


def test_a_retry_of_a_prompt_job_reattaches_instead_of_creating_again(emulator: Emulator) -> None:
    store = FakeTaskStateStore()
    first = create(["one", "two"], wait_for_completion=False).execute(task_context(store))
    store.values[RECORD_KEY]["finished"] = False  # as if the first try died after its create

    second = create(["one", "two"]).execute(task_context(store))

    assert second["batch_ids"] == first["batch_ids"]
    assert batches_created(emulator) == 1


def test_the_operator_sends_shared_settings_and_fills_the_model() -> None:
    operator = create(["q"], system="Answer in French.", message_params={"temperature": 0.1})

    (sent,) = operator.prepare().source.iter_requests()

    assert sent["params"]["system"] == "Answer in French."
    assert sent["params"]["temperature"] == 0.1
    assert sent["params"]["model"] == MODEL


BAD_PROMPTS = {
    "not-a-list": ("just one prompt", "prompts must be a list"),
    "empty-text": (["ok", "  "], "prompts[1] (custom_id 'prompt-1'): prompt must be non-empty text"),
    "wrong-type": (["ok", 42], "prompts[1]: a prompt is a string or a dict"),
    "both-prompt-and-messages": (
        [{"prompt": "x", "messages": []}],
        "prompts[0] (custom_id 'prompt-0'): give exactly one of 'prompt'",
    ),
    "duplicate-ids": ([{"prompt": "x", "custom_id": "prompt-1"}, "y"], "duplicates"),
}


@pytest.mark.parametrize(("prompts", "message"), BAD_PROMPTS.values(), ids=BAD_PROMPTS.keys())
def test_a_bad_prompt_fails_naming_it_before_any_batch_is_created(
    emulator: Emulator, prompts: Any, message: str
) -> None:
    with pytest.raises(RequestValidationError, match=re.escape(message)):
        create(prompts).execute(task_context())

    assert batches_created(emulator) == 0


def test_prompts_without_max_tokens_fail_naming_the_field(emulator: Emulator) -> None:
    with pytest.raises(RequestValidationError, match="params.max_tokens is missing"):
        create(["q"], max_tokens=None).execute(task_context())


def test_prompts_exclude_requests_and_requests_path() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        AnthropicCreateBatchOperator(task_id="t", prompts=["a"], requests_path="file:///x.jsonl")
