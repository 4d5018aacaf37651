"""The outcome policy, end to end against the emulator: a job in which nothing succeeded fails, a
tolerated share of failures warns, and every failure or warning names the error types behind it."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchOutcomeError
from airflow_provider_batches.failures import summarize_errors
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from tests.operators.support import request, requests, task_context


def create(**kwargs: Any) -> AnthropicCreateBatchOperator:
    settings: dict[str, Any] = {"requests": requests(2), "poll_interval": 0.05, "deferrable": False, **kwargs}
    return AnthropicCreateBatchOperator(task_id="create", **settings)


def typo(custom_id: str) -> dict[str, Any]:
    return request(custom_id, model="claude-sonet-4-6")


def test_a_mistyped_model_fails_the_job_naming_not_found_error_the_model_and_the_round(
    emulator: Emulator,
) -> None:
    operator = create(requests=[typo("a"), typo("b"), typo("c")], check_models=False)

    with pytest.raises(BatchOutcomeError) as failure:
        operator.execute(task_context())

    message = str(failure.value)
    assert message.startswith("No request succeeded: 0 succeeded, 3 errored")
    assert "not_found_error x3 (round 1)" in message
    assert "claude-sonet-4-6" in message
    assert sorted(message.rsplit("custom_ids ", 1)[1].split(", ")) == ["a", "b", "c"]


def test_every_request_errored_fails_even_without_fail_on_partial_error(emulator: Emulator) -> None:
    operator = create(
        requests=[request("x", "[emulator:errored=overloaded_error]"), request("y", "[emulator:expired]")]
    )

    with pytest.raises(BatchOutcomeError, match=r"No request succeeded.*overloaded_error x1"):
        operator.execute(task_context())


def test_a_share_of_failures_within_max_error_rate_warns_with_the_error_types_and_goes_in_the_manifest(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = [*requests(3), request("bad", "[emulator:errored=invalid_request_error]")]

    manifest = create(requests=batch, max_error_rate=0.25).execute(task_context())

    output = capsys.readouterr().out
    assert "Some requests did not succeed: 3 succeeded, 1 errored" in output
    assert "invalid_request_error x1 (round 1)" in output
    assert manifest["errors"]["failed"] == 1
    [entry] = manifest["errors"]["types"]
    assert entry["type"] == "invalid_request_error"
    assert entry["custom_ids"] == ["bad"]
    assert entry["rounds"] == [1]
    assert entry["example"]


def test_a_share_of_failures_above_max_error_rate_fails_naming_the_rate(emulator: Emulator) -> None:
    batch = [*requests(3), request("bad", "[emulator:errored=invalid_request_error]")]

    with pytest.raises(BatchOutcomeError, match=r"25\.0% of the requests .* max_error_rate=0\.2 .*bad"):
        create(requests=batch, max_error_rate=0.2).execute(task_context())


def test_a_job_that_all_succeeded_reads_no_results(emulator: Emulator) -> None:
    manifest = create(requests=requests(2)).execute(task_context())

    assert "errors" not in manifest
    assert "GET /v1/messages/batches/{id}/results" not in emulator.admin.stats()["calls"]


def test_max_error_rate_of_one_tolerates_a_job_in_which_nothing_succeeded(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = create(requests=[typo("a")], check_models=False, max_error_rate=1.0).execute(task_context())

    assert manifest["request_counts"]["errored"] == 1
    assert "not_found_error x1 (round 1)" in capsys.readouterr().out


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.1", True])
def test_max_error_rate_out_of_range_is_refused_when_the_dag_is_parsed(value: Any) -> None:
    with pytest.raises(ValueError, match="max_error_rate must be a fraction between 0 and 1"):
        create(max_error_rate=value)


def test_the_sensor_names_the_error_types_too(emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch([typo("only")])
    sensor = AnthropicBatchSensor(task_id="wait", batch_id=batch.id, poke_interval=0.05, deferrable=False)

    with pytest.raises(BatchOutcomeError, match=r"not_found_error x1 \(round 1\): 'model: claude-sonet-4-6'"):
        sensor.execute(task_context())


def test_the_error_scan_stops_after_its_bound_and_says_how_much_it_read(emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch = hook.create_batch([request(f"e{index}", "[emulator:errored]") for index in range(5)])
    ended = hook.get_batch(batch.id)

    summary = summarize_errors(hook, [(1, {batch.id: ended.request_counts.as_dict()})], max_failed_lines=2)

    assert summary.failed == 5
    assert summary.read == 2
    assert "from 2 of 5 failed results read" in summary.describe()


def test_after_re_drive_only_the_final_failures_are_named(emulator: Emulator) -> None:
    batch = [
        request("ok"),
        request("flaky", "[emulator:errored_once=overloaded_error]"),  # re-driven, then succeeds
        request("bad", "[emulator:errored=invalid_request_error]"),  # permanent: stays in round 1
    ]

    manifest = create(requests=batch, redrive=Redrive()).execute(task_context())

    assert manifest["request_counts"]["errored"] == 1
    assert [entry["type"] for entry in manifest["errors"]["types"]] == ["invalid_request_error"]
    assert manifest["errors"]["failed"] == 1
    assert manifest["errors"]["types"][0]["custom_ids"] == ["bad"]
