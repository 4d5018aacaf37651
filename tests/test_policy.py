"""The policy module's rules, each written once and shared: retryable statuses, the vocabulary."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_batches.client_core import should_retry
from airflow_provider_batches.errors import error_from_response
from airflow_provider_batches.models import RESULT_TYPES, BatchResult, RequestCounts, UnknownResult
from airflow_provider_batches.policy import is_transient


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
