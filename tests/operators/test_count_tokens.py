"""AnthropicCountTokensOperator against the running emulator: counts, estimates and budget guards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BudgetExceededError, RequestValidationError, UnpricedModelError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator

MODEL = "claude-sonnet-4-6"
UNPRICED = "claude-emulator-test"  # the emulator's test model has no price


def params(text: str, *, model: str = MODEL, max_tokens: int = 100) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


def job(count: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"r{i}", "params": params(f"question number {i} " * (i + 1), **kwargs)}
        for i in range(count)
    ]


def run(**kwargs: Any) -> dict[str, Any]:
    operator = AnthropicCountTokensOperator(task_id="count", **kwargs)
    return operator.execute({})  # type: ignore[arg-type]


def test_one_request_counts_what_the_api_counts(anthropic_emulator: Emulator) -> None:
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    expected = AnthropicHook().count_tokens({"model": MODEL, "messages": messages})
    summary = run(messages=messages, model=MODEL, max_tokens=200)
    assert summary["input_tokens"] == expected
    assert summary["max_output_tokens"] == 200
    assert summary["request_count"] == 1


def test_a_job_sums_every_request_per_model(anthropic_emulator: Emulator) -> None:
    requests = [*job(5), {"custom_id": "h", "params": params("short", model="claude-haiku-4-5")}]
    hook = AnthropicHook()
    per_request = [hook.count_tokens(r["params"]) for r in requests]
    summary = run(requests=requests, max_concurrency=3)
    assert summary["input_tokens"] == sum(per_request)
    assert summary["input_tokens_per_model"] == {
        "claude-haiku-4-5": per_request[-1],
        MODEL: sum(per_request[:-1]),
    }
    assert summary["max_output_tokens"] == 600


def test_a_job_from_a_file_counts_the_same_as_inline(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in job(4)))
    assert run(requests_path=str(path))["input_tokens"] == run(requests=job(4))["input_tokens"]


def test_the_estimate_is_half_the_standard_price(anthropic_emulator: Emulator) -> None:
    summary = run(requests=job(2), prices={MODEL: {"input": 2.0, "output": 10.0}})
    expected_input = summary["input_tokens"] * 2.0 / 1e6 * 0.5
    expected_output = 200 * 10.0 / 1e6 * 0.5
    assert summary["estimated_cost_usd"] == {
        "input": round(expected_input, 6),
        "output_max": round(expected_output, 6),
        "total_max": round(expected_input + expected_output, 6),
    }


def test_an_unpriced_model_has_no_estimate(anthropic_emulator: Emulator) -> None:
    summary = run(requests=job(1, model=UNPRICED))
    assert summary["estimated_cost_usd"] is None
    assert summary["unpriced_models"] == [UNPRICED]


def test_max_input_tokens_fails_before_any_batch(anthropic_emulator: Emulator) -> None:
    with pytest.raises(BudgetExceededError, match="over max_input_tokens=10"):
        run(requests=job(3), max_input_tokens=10)
    assert anthropic_emulator.admin.stats()["batches_created"] == {}


def test_max_cost_counts_the_output_bound(anthropic_emulator: Emulator) -> None:
    prices = {MODEL: {"input": 0.0, "output": 1_000_000.0}}
    with pytest.raises(BudgetExceededError, match=r"may cost up to \$100.00"):
        run(requests=job(2), prices=prices, max_cost_usd=50)
    assert run(requests=job(2), prices=prices, max_cost_usd=100)["estimated_cost_usd"]["total_max"] == 100.0


def test_max_cost_with_an_unpriced_model_names_it_and_the_prices_fix(anthropic_emulator: Emulator) -> None:
    with pytest.raises(
        UnpricedModelError, match=rf"no price is known for {UNPRICED}.*prices=\{{'{UNPRICED}'"
    ):
        run(requests=job(1, model=UNPRICED), max_cost_usd=1)


def test_prices_give_an_unpriced_model_its_estimate(anthropic_emulator: Emulator) -> None:
    summary = run(requests=job(1, model=UNPRICED), prices={UNPRICED: {"input": 1.0, "output": 1.0}})
    assert summary["unpriced_models"] == []
    assert summary["estimated_cost_usd"]["input"] == round(summary["input_tokens"] / 1e6 * 0.5, 6)


def test_bad_requests_fail_before_counting(anthropic_emulator: Emulator) -> None:
    with pytest.raises(RequestValidationError, match="params.max_tokens must be an integer"):
        run(requests=job(1, max_tokens=0))
    assert anthropic_emulator.admin.stats()["calls"] == {}


def test_rate_limit_answers_pause_the_count_until_it_completes(anthropic_emulator: Emulator) -> None:
    expected = run(requests=job(12))["input_tokens"]
    anthropic_emulator.admin.set_config(next_faults=["429"] * 10, retry_after_ms=50)
    summary = run(requests=job(12), max_concurrency=4)
    assert summary["input_tokens"] == expected
    assert anthropic_emulator.admin.stats()["calls"]["POST /v1/messages/count_tokens"]["429"] == 10


def test_an_output_schema_is_counted_as_the_create_operator_will_send_it(
    anthropic_emulator: Emulator,
) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    requests = job(2, model="claude-emulator-test")  # a forced tool call: the tool's schema is input
    plain = run(requests=requests)["input_tokens"]
    assert run(requests=requests, output_schema=schema)["input_tokens"] > plain
