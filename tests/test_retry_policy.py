"""The client's retry policy, tested by stepping its plans: which answers are retried, and how long
each wait is (retry-after, exponential back-off with jitter, the attempt and total-wait bounds)."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_batches import errors
from airflow_provider_batches.client_core import get_batch_plan
from airflow_provider_batches.models import MessageBatch
from tests.fakes import batch_json, error
from tests.plans import Answer, PlanRun, settings

OK = httpx.Response(200, json=batch_json())


def get_batch(*answers: Answer, **changes: object) -> PlanRun[MessageBatch]:
    return PlanRun(get_batch_plan(settings(**changes), "msgbatch_1"), *answers)


def test_retry_after_ms_is_honoured() -> None:
    run = get_batch(error(529, "overloaded_error", **{"retry-after-ms": "1500"}), OK)
    assert run.result().id == "msgbatch_1"
    assert run.sleeps == [1.5]


def test_retry_after_seconds_is_honoured() -> None:
    run = get_batch(error(529, "overloaded_error", **{"retry-after": "7"}), OK)
    run.result()
    assert run.sleeps == [7.0]


def test_a_rate_limited_retry_waits_at_least_the_retry_after_and_at_most_half_again() -> None:
    run = get_batch(error(429, "rate_limit_error", **{"retry-after": "7"}), OK)
    run.result()
    assert len(run.sleeps) == 1
    assert 7.0 <= run.sleeps[0] <= 10.5


def test_rate_limited_retries_told_the_same_second_spread_out() -> None:
    """1,000 clients told ``retry-after: 59`` do not all come back at 59.00 s."""
    told = error(429, "rate_limit_error", **{"retry-after": "59"})
    waits = []
    for _ in range(1000):
        run = get_batch(told, OK)
        run.result()
        waits.extend(run.sleeps)
    assert min(waits) >= 59.0
    assert max(waits) - min(waits) > 25.0
    in_any_second = max(sum(1 for w in waits if start <= w < start + 1) for start in range(59, 89))
    assert in_any_second < 100


def test_an_absurd_retry_after_falls_back_to_exponential_backoff() -> None:
    run = get_batch(error(429, "rate_limit_error", **{"retry-after": "3600"}), OK)
    run.result()
    assert len(run.sleeps) == 1
    assert 0.375 <= run.sleeps[0] <= 0.5


def test_backoff_grows_exponentially_with_jitter() -> None:
    busy = error(500, "api_error")
    run = get_batch(busy, busy, busy, OK, max_retries=3)
    run.result()
    bases = [0.5, 1.0, 2.0]
    assert len(run.sleeps) == len(bases)
    assert all(0.75 * base <= waited <= base for waited, base in zip(run.sleeps, bases, strict=True))


def test_x_should_retry_false_stops_retries() -> None:
    run = get_batch(error(529, "overloaded_error", **{"x-should-retry": "false"}))
    with pytest.raises(errors.OverloadedError):
        run.result()
    assert len(run.requests) == 1
    assert run.sleeps == []


def test_x_should_retry_true_retries_even_a_400() -> None:
    run = get_batch(error(400, "invalid_request_error", **{"x-should-retry": "true"}), OK)
    assert run.result().id == "msgbatch_1"
    assert len(run.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (400, "invalid_request_error", errors.InvalidRequestError),
        (401, "authentication_error", errors.AuthenticationError),
        (403, "permission_error", errors.PermissionDeniedError),
        (404, "not_found_error", errors.NotFoundError),
    ],
)
def test_client_errors_are_not_retried(status: int, error_type: str, cls: type[Exception]) -> None:
    run = get_batch(error(status, error_type))
    with pytest.raises(cls):
        run.result()
    assert len(run.requests) == 1
    assert run.sleeps == []


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 504, 529])
def test_transient_statuses_are_retried(status: int) -> None:
    run = get_batch(httpx.Response(status, text="busy"), OK)
    assert run.result().id == "msgbatch_1"
    assert len(run.requests) == 2
    assert len(run.sleeps) == 1


def test_connection_errors_are_retried() -> None:
    run = get_batch(httpx.ConnectError("refused"), OK)
    assert run.result().id == "msgbatch_1"
    assert len(run.requests) == 2


def test_retries_are_bounded_by_max_retries() -> None:
    run = get_batch(error(529, "overloaded_error"), max_retries=4)
    with pytest.raises(errors.OverloadedError):
        run.result()
    assert len(run.requests) == 5


def test_retries_are_bounded_by_total_wait() -> None:
    run = get_batch(
        error(529, "overloaded_error", **{"retry-after": "10"}), max_retries=10, max_retry_wait=25
    )
    with pytest.raises(errors.OverloadedError):
        run.result()
    assert run.sleeps == [10.0, 10.0]


def test_an_unreachable_api_raises_a_connection_error_naming_the_url_and_the_attempts() -> None:
    run = get_batch(httpx.ConnectError("connection refused"))
    with pytest.raises(errors.APIConnectionError, match=r"http://api\.test.*gave up after 3 attempts"):
        run.result()
    assert len(run.sleeps) == 2
