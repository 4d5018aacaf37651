"""The request budget: a token bucket that never lets a sliding minute hold more than its rate,
slows down on what the API's rate-limit headers and 429s say, and paces a plan's sends by asking
for a ``Sleep`` before each (stepped by hand: no clock is patched)."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from airflow_provider_batches.budget import RATE_CLAIM_SECONDS, RequestBudget, budgeted, shared_budget
from airflow_provider_batches.client_core import ClientSettings, get_batch_plan
from tests.fakes import batch_json, error
from tests.plans import PlanRun, settings

WALL = 1_800_000_000.0  # a wall-clock instant for the reset headers
OK = httpx.Response(200, json=batch_json())


def send_times(budget: RequestBudget, count: int, start: float = 0.0) -> list[float]:
    """When ``count`` sends asked at ``start`` at once go out."""
    return [start + budget.reserve(start) for _ in range(count)]


def rate_limit_headers(remaining: int, reset_in: float) -> dict[str, str]:
    reset = datetime.fromtimestamp(WALL + reset_in, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    return {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset,
    }


def test_sends_are_spaced_so_no_minute_holds_more_than_the_rate() -> None:
    times = send_times(RequestBudget(40), 200)
    most = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    assert most == 40


def test_the_first_send_goes_at_once() -> None:
    assert RequestBudget(40).reserve(100.0) == 0.0


def test_an_idle_budget_does_not_save_up_a_burst() -> None:
    budget = RequestBudget(60)
    budget.reserve(0.0)
    assert send_times(budget, 3, start=1000.0) == [1000.0, 1001.0, 1002.0]


def test_no_remaining_requests_hold_sends_until_the_reset() -> None:
    budget = RequestBudget(600)
    budget.observe(httpx.Response(200, headers=rate_limit_headers(0, reset_in=12.0)), 0.0, WALL)
    assert budget.reserve(0.0) == pytest.approx(12.0)


def test_few_remaining_requests_are_spread_until_the_reset() -> None:
    budget = RequestBudget(600)
    budget.observe(httpx.Response(200, headers=rate_limit_headers(3, reset_in=20.0)), 0.0, WALL)
    assert budget.reserve(0.0) == pytest.approx(5.0)


def test_a_429_holds_sends_for_its_retry_after() -> None:
    budget = RequestBudget(600)
    budget.observe(error(429, "rate_limit_error", **{"retry-after": "9"}), 0.0, WALL)
    assert budget.reserve(0.0) == pytest.approx(9.0)


def test_a_budgeted_plan_sleeps_before_a_send_the_budget_is_not_ready_for() -> None:
    budget = RequestBudget(30)  # one send every 2 s
    budget.reserve(0.0)
    run = PlanRun(budgeted(get_batch_plan(settings(), "msgbatch_1"), budget, clock=lambda: 0.5), OK)
    assert run.result().id == "msgbatch_1"
    assert run.sleeps == [pytest.approx(1.5)]


def test_a_late_send_pushes_the_next_slot_a_whole_spacing_after_it() -> None:
    budget = RequestBudget(60)  # one send a second
    assert budget.reserve(0.0) == 0.0
    budget.sent(0.4)  # the event loop sent it 0.4 s late
    assert budget.reserve(0.5) == pytest.approx(0.9)  # at 1.4 s, not 1.0 s


def test_a_budgeted_plan_passes_transport_errors_to_the_plan() -> None:
    budget = RequestBudget(6000)
    plan = budgeted(get_batch_plan(settings(max_retries=1), "msgbatch_1"), budget, clock=lambda: 0.0)
    run = PlanRun(plan, httpx.ConnectError("refused"), OK)
    assert run.result().id == "msgbatch_1"
    assert len(run.requests) == 2


def test_connections_on_one_key_share_one_budget_at_the_lowest_rate() -> None:
    first = shared_budget(ClientSettings(api_key="sk-ant-shared-1", max_requests_per_minute=40))
    second = shared_budget(ClientSettings(api_key="sk-ant-shared-1", max_requests_per_minute=20))
    assert first is second
    assert first is not None
    assert first.requests_per_minute == 20


def test_a_raised_rate_applies_once_the_lower_one_has_gone_unused() -> None:
    key = "sk-ant-shared-raised"
    before = shared_budget(ClientSettings(api_key=key, max_requests_per_minute=20), now=0.0)

    after = shared_budget(
        ClientSettings(api_key=key, max_requests_per_minute=400), now=RATE_CLAIM_SECONDS + 1
    )

    assert after is before
    assert after is not None
    assert after.requests_per_minute == 400


def test_a_zero_budget_means_unlimited() -> None:
    assert shared_budget(ClientSettings(api_key="sk-ant-never-limited", max_requests_per_minute=0)) is None


def test_a_zero_budget_connection_shares_the_budget_another_connection_on_its_key_keeps() -> None:
    key = "sk-ant-shared-zero"
    limited = shared_budget(ClientSettings(api_key=key, max_requests_per_minute=20), now=0.0)

    assert shared_budget(ClientSettings(api_key=key, max_requests_per_minute=0), now=1.0) is limited
    assert (
        shared_budget(ClientSettings(api_key=key, max_requests_per_minute=0), now=RATE_CLAIM_SECONDS + 1)
        is None
    )
