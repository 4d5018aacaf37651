"""Terminal API answers (spend cap, usage limit, billing, permission, organization on hold) fail at
once, with what to change: one request, no retry, in the hook, the create operator, the worker's wait
and the triggerer's shared poller. Each is scripted in the emulator (``next_faults``)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest

from airflow_provider_batches import errors
from airflow_provider_batches.budget import RequestBudget
from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.policy import WaitSpec
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import batches_created, requests, task_context

TERMINAL = {
    "spend_limit": (errors.SpendLimitReachedError, "monthly spend limit"),
    "usage_limit": (errors.UsageLimitReachedError, "raise it"),
    "billing": (errors.BillingError, "Settings > Billing"),
    "permission": (errors.PermissionDeniedError, "workspace lacks access"),
    "on_hold": (errors.OrganizationOnHoldError, "on hold"),
}


def calls(emulator: Emulator) -> int:
    """Every /v1/ call the emulator answered, whatever its route and status."""
    return sum(sum(statuses.values()) for statuses in emulator.admin.stats()["calls"].values())


@pytest.mark.parametrize("fault", sorted(TERMINAL))
def test_a_terminal_answer_is_raised_after_exactly_one_request(emulator: Emulator, fault: str) -> None:
    cls, fix = TERMINAL[fault]
    emulator.admin.set_config(next_faults=[fault], retry_after_ms=1)

    with pytest.raises(cls, match=fix) as raised:
        AnthropicHook().list_batches(limit=1)

    assert raised.value.terminal
    assert calls(emulator) == 1


def test_the_spend_cap_keeps_its_error_code_and_is_no_rate_limit(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["spend_limit"])

    with pytest.raises(errors.SpendLimitReachedError) as raised:
        AnthropicHook().get_batch("msgbatch_x")

    assert raised.value.status_code == 429
    assert raised.value.error_code == "enforced_spend_limit_reached"
    assert not isinstance(raised.value, errors.RateLimitError)  # never taken for a full queue


def test_a_spend_cap_fails_the_create_task_after_one_request_with_no_batch_made(emulator: Emulator) -> None:
    operator = AnthropicCreateBatchOperator(
        task_id="create", requests=requests(2), poll_interval=0.05, deferrable=False, check_models=False
    )
    emulator.admin.set_config(next_faults=["spend_limit"])

    with pytest.raises(errors.SpendLimitReachedError, match="Settings > Limits") as raised:
        operator.execute(task_context())

    assert isinstance(raised.value, errors.AirflowFailException)  # Airflow does not retry the task
    assert calls(emulator) == 1
    assert batches_created(emulator) == 0


def test_a_terminal_answer_to_a_poll_ends_the_wait_at_once(emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch = hook.create_batch(requests(1))
    before = calls(emulator)
    emulator.admin.set_config(next_faults=["billing"])

    with pytest.raises(BatchWaitError, match="billing_error"):
        hook.wait_for_batches([batch.id], WaitSpec(math.inf, 0.01, 0.01))

    assert calls(emulator) - before == 1


def test_a_terminal_answer_to_the_shared_poller_sends_an_error_event(emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(1))
    before = calls(emulator)
    emulator.admin.set_config(next_faults=["spend_limit"])
    trigger = AnthropicBatchTrigger(batch_ids=[batch.id], deadline=1e12, poll_interval=0.01)

    async def first_event() -> dict[str, Any]:
        return await asyncio.wait_for(anext(trigger.run()), 30)

    event = asyncio.run(first_event()).payload

    assert event["status"] == "error"
    assert "monthly spend limit" in event["message"]
    assert calls(emulator) - before == 1


def test_a_spend_cap_does_not_hold_the_request_budget() -> None:
    budget = RequestBudget(60)
    body = (
        b'{"type":"error","error":{"type":"rate_limit_error","message":"cap",'
        b'"details":{"error_code":"enforced_spend_limit_reached"}}}'
    )
    capped = httpx.Response(429, content=body)
    paced = httpx.Response(
        429, headers={"retry-after": "30"}, content=b'{"error":{"type":"rate_limit_error"}}'
    )

    budget.observe(capped, now=100.0, wall_now=0.0)
    assert budget.reserve(100.0) == 0.0
    budget.observe(paced, now=100.0, wall_now=0.0)
    assert budget.reserve(100.0) == pytest.approx(30.0)
