"""Readiness, one rule in ``policy``: a batch's results can be downloaded once it has ended, while it
is not archived, from its ``results_url``, and the key goes only to the configured API's origin.
The hook applies it before any request (tests/hooks/test_hook_http.py); here the rule itself."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_batches import client_core, policy
from airflow_provider_batches.client_core import ClientSettings
from airflow_provider_batches.errors import BatchNotReadyError, ForeignResultsURLError
from airflow_provider_batches.hooks import anthropic
from airflow_provider_batches.models import MessageBatch
from tests.fakes import batch_json

API = "https://api.example.test"


def batch(batch_id: str = "msgbatch_1", status: str = "ended", **fields: Any) -> MessageBatch:
    return MessageBatch.model_validate(batch_json(batch_id, status=status, **fields))


def test_an_ended_batch_with_a_results_url_is_ready() -> None:
    assert policy.results_not_ready_reason(batch()) is None
    policy.check_results_ready([batch()])


@pytest.mark.parametrize("status", ["in_progress", "canceling"])
def test_a_batch_that_has_not_ended_is_not_ready_and_the_reason_says_how_to_wait(status: str) -> None:
    reason = policy.results_not_ready_reason(batch(status=status))

    assert reason is not None
    assert f"msgbatch_1 is {status}" in reason
    assert "AnthropicBatchSensor" in reason


def test_an_ended_batch_without_a_results_url_is_not_ready() -> None:
    assert policy.results_not_ready_reason(batch(results_url=None)) is not None


def test_an_archived_batch_is_not_ready_even_though_it_ended() -> None:
    reason = policy.results_not_ready_reason(batch(archived_at="2026-12-21T10:00:00Z"))

    assert reason == (
        "batch msgbatch_1 was archived at 2026-12-21 10:00Z and its results are no longer available"
    )


def test_every_batch_that_is_not_ready_is_named_at_once() -> None:
    batches = [
        batch("msgbatch_a", status="in_progress"),
        batch("msgbatch_b"),
        batch("msgbatch_c", results_url=None),
    ]

    with pytest.raises(BatchNotReadyError) as raised:
        policy.check_results_ready(batches)

    assert "msgbatch_a" in str(raised.value)
    assert "msgbatch_c" in str(raised.value)
    assert "msgbatch_b" not in str(raised.value)


@pytest.mark.parametrize(
    "results_url",
    [f"{API}/v1/messages/batches/msgbatch_1/results", "https://API.example.test:443/r?token=1"],
)
def test_a_results_url_at_the_configured_origin_is_accepted(results_url: str) -> None:
    assert policy.check_results_origin(API, results_url) == results_url


@pytest.mark.parametrize(
    "results_url",
    [
        "http://api.example.test/r",  # another scheme
        "https://api.example.test:8443/r",  # another port
        "https://api.example.test.evil.example/r",  # another host that begins the same
        "https://evil.example/r",
    ],
)
def test_a_results_url_at_any_other_origin_is_refused(results_url: str) -> None:
    with pytest.raises(ForeignResultsURLError, match="not the configured API origin"):
        policy.check_results_origin(API, results_url)


def test_the_rules_old_homes_warn_and_answer_as_policy_does() -> None:
    settings = ClientSettings(api_key="sk-ant-unused", base_url=API)
    not_ready = batch(status="in_progress")

    with pytest.warns(DeprecationWarning, match=r"policy\.results_not_ready_reason"):
        assert anthropic.results_not_ready_reason(not_ready) == policy.results_not_ready_reason(not_ready)
    with pytest.warns(DeprecationWarning, match=r"policy\.check_results_origin"):
        assert client_core.check_results_url(settings, f"{API}/r") == f"{API}/r"
    with pytest.warns(DeprecationWarning, match="check_results_url"), pytest.raises(ForeignResultsURLError):
        client_core.check_results_url(settings, "https://evil.example/r")
