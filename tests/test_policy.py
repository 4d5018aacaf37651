"""The policy module's rules, each written once and shared: retryable statuses, the vocabulary."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_batches.client_core import should_retry
from airflow_provider_batches.errors import BatchTimeoutError, BatchWaitError, error_from_response
from airflow_provider_batches.models import RESULT_TYPES, BatchResult, RequestCounts, UnknownResult
from airflow_provider_batches.policy import WaitEvent, is_transient, raise_for_wait_event


def test_a_poll_and_a_call_retry_the_same_statuses() -> None:
    body = b'{"type": "error", "error": {"type": "some_error", "message": "m"}}'

    def polled(status: int) -> bool:
        return is_transient(error_from_response(status, body, None), now=0.0, not_found_grace_until=None)

    differing = [
        status for status in range(400, 600) if polled(status) != should_retry(httpx.Response(status))
    ]

    assert differing == []
    assert [polled(429), polled(529), polled(400)] == [True, True, False]


def test_the_result_types_are_the_request_counts_but_processing() -> None:
    assert RESULT_TYPES == ("succeeded", "errored", "canceled", "expired")
    assert set(RequestCounts().as_dict()) == {"processing", *RESULT_TYPES}


@pytest.mark.parametrize("kind", RESULT_TYPES)
def test_every_result_type_parses_to_its_own_model(kind: str) -> None:
    result = {"type": kind}
    if kind == "succeeded":
        result["message"] = {"id": "msg_1", "model": "claude-x"}  # type: ignore[assignment]
    elif kind == "errored":
        result["error"] = {"error": {"type": "api_error"}}  # type: ignore[assignment]

    line = BatchResult.model_validate({"custom_id": "a", "result": result})

    assert line.result.type == kind
    assert not isinstance(line.result, UnknownResult)


# -- the wait event's exception ---------------------------------------------------------------------

COUNTS = {"msgbatch_1": {"succeeded": 1, "errored": 0, "canceled": 0, "expired": 0, "processing": 0}}


class SensorTimeout(Exception):
    """Stands for the timeout a caller names (the sensor's AirflowSensorTimeout)."""


def test_a_successful_wait_gives_its_final_counts() -> None:
    calls: list[str] = []
    wait = WaitEvent("success", ["msgbatch_1"], "1 batch(es) ended", COUNTS)

    assert raise_for_wait_event(wait, on_timeout=lambda: calls.append("timeout")) == COUNTS
    assert calls == []


def test_a_timed_out_wait_runs_the_timeout_step_then_raises_a_timeout() -> None:
    calls: list[str] = []
    wait = WaitEvent("timeout", ["msgbatch_1"], "batch(es) msgbatch_1 had not ended by the deadline")

    with pytest.raises(BatchTimeoutError, match="msgbatch_1 had not ended"):
        raise_for_wait_event(wait, on_timeout=lambda: calls.append("timeout"))
    assert calls == ["timeout"]


def test_a_timed_out_wait_raises_the_callers_timeout_with_the_callers_message() -> None:
    wait = WaitEvent("timeout", ["msgbatch_1"], "batch(es) msgbatch_1 had not ended by the deadline")

    with pytest.raises(SensorTimeout, match="^proof wait over$"):
        raise_for_wait_event(wait, timeout_error=SensorTimeout, timeout_message="proof wait over")


def test_a_failed_wait_raises_a_wait_error_and_runs_no_timeout_step() -> None:
    calls: list[str] = []
    wait = WaitEvent("error", ["msgbatch_1"], "polling batch msgbatch_1 failed: 401")

    with pytest.raises(BatchWaitError, match="polling batch msgbatch_1 failed: 401") as raised:
        raise_for_wait_event(wait, on_timeout=lambda: calls.append("timeout"))
    assert not isinstance(raised.value, BatchTimeoutError)
    assert calls == []
