"""A re-driven job's results: merged to one final result per custom_id, and what the job cost.

The create operator runs against the emulator with transient markers, so its rounds are real; the
expected cost is computed here independently, from the raw results the emulator serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.operators.support import request, task_context

NO_CONTEXT = cast(Context, {})
PRICES = {"claude-emulator-test": {"input": 3.0, "output": 15.0}}
CACHED_SYSTEM = [
    {"type": "text", "text": "shared instructions " * 40, "cache_control": {"type": "ephemeral"}}
]


def re_driven_job() -> dict[str, Any]:
    """Six requests: two fail once, one twice, one for good (invalid), two with a cached system prompt."""
    reqs = [
        request("plain", "hello"),
        request("once-a", "a [emulator:errored_once=overloaded_error]"),
        request("once-b", "b [emulator:expired_once]"),
        request("twice", "c [emulator:errored_twice=api_error]"),
        request("bad", "d [emulator:errored=invalid_request_error]"),
        request("cached-1", "e", system=CACHED_SYSTEM),
        request("cached-2", "f", system=CACHED_SYSTEM),
    ]
    operator = AnthropicCreateBatchOperator(
        task_id="create", requests=reqs, redrive=Redrive(), poll_interval=0.05, deferrable=False
    )
    manifest: dict[str, Any] = operator.execute(task_context())
    return manifest


def export(manifest: Any, destination: str, **kwargs: Any) -> dict[str, Any]:
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=manifest, destination=destination, download_retry_delay=0, **kwargs
    )
    result: dict[str, Any] = operator.execute(NO_CONTEXT)
    return result


def published_lines(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for entry in manifest["files"]:
        if not entry["name"].startswith("attempt-"):
            lines += [json.loads(line) for line in (folder / entry["name"]).read_text().splitlines()]
    return lines


def expected_cost(batch_ids: list[str]) -> float:
    """Batch-rate cost of every result's usage, computed from the raw results, prices as above."""
    total = 0.0
    for batch_id in batch_ids:
        for result in AnthropicHook().iter_results(batch_id):
            if result.result.type != "succeeded":
                continue
            usage = result.result.message.usage
            price = PRICES[result.result.message.model]
            effective_input = (
                usage.input_tokens
                + 1.25 * (usage.cache_creation_input_tokens or 0)
                + 0.1 * (usage.cache_read_input_tokens or 0)
            )
            total += (effective_input * price["input"] + usage.output_tokens * price["output"]) / 1e6 * 0.5
    return total


def test_the_merged_output_holds_each_custom_id_once_with_its_last_answer(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    job = re_driven_job()

    manifest = export(job, f"file://{tmp_path}/out/")

    lines = published_lines(tmp_path / "out", manifest)
    by_id = {line["custom_id"]: line["result"]["type"] for line in lines}
    assert len(lines) == 7
    assert by_id == {
        "plain": "succeeded",
        "once-a": "succeeded",
        "once-b": "succeeded",
        "twice": "succeeded",
        "bad": "errored",
        "cached-1": "succeeded",
        "cached-2": "succeeded",
    }
    assert manifest["counts"] == {"succeeded": 6, "errored": 1, "canceled": 0, "expired": 0}
    assert manifest["counts"] == {k: v for k, v in job["request_counts"].items() if k != "processing"}
    assert manifest["rounds"]["merged"]["request_count"] == 7


def test_split_by_result_type_merges_rounds_too(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    manifest = export(re_driven_job(), f"file://{tmp_path}/out/", split_by_result_type=True)

    succeeded = (tmp_path / "out" / "succeeded.jsonl").read_text().splitlines()
    errored = (tmp_path / "out" / "errored.jsonl").read_text().splitlines()
    assert len(succeeded) == 6
    assert [json.loads(line)["custom_id"] for line in errored] == ["bad"]
    assert manifest["results"] == 7


def test_include_attempts_also_publishes_every_round_s_raw_results(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    job = re_driven_job()

    manifest = export(job, f"file://{tmp_path}/out/", include_attempts=True)

    attempts = sorted(entry["name"] for entry in manifest["files"] if entry["name"].startswith("attempt-"))
    assert [name.split("-")[2] for name in attempts] == ["1", "2", "3"]
    raw = sum(len((tmp_path / "out" / name).read_text().splitlines()) for name in attempts)
    # as received: each batch's proof request too (7 + 3 + 1, and one proof line per batch)
    assert raw == sum(entry["request_count"] for entry in job["rounds"]) + len(job["batch_ids"])
    assert len(published_lines(tmp_path / "out", manifest)) == 7


def test_a_round_holding_a_request_the_job_never_had_publishes_nothing(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    job = re_driven_job()
    other = AnthropicCreateBatchOperator(
        task_id="other",
        requests=[request("stranger", "x [emulator:errored_once=overloaded_error]")],
        redrive=Redrive(),
        poll_interval=0.05,
        deferrable=False,
    ).execute(task_context())
    (foreign,) = other["rounds"][1]["batch_ids"]
    grafted = {  # each batch matches its own digest, but the merge holds a custom_id the job never sent
        **job,
        "batch_ids": [*job["batch_ids"], foreign],
        "batches": {**job["batches"], foreign: other["batches"][foreign]},
        "rounds": [*job["rounds"], {**other["rounds"][1], "round": 4}],
    }

    with pytest.raises(ResultsVerificationError, match="merged output"):
        export(grafted, f"file://{tmp_path}/out/")

    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_actual_cost_is_the_sum_of_the_usage_the_emulator_reported(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    job = re_driven_job()

    spend = export(job, f"file://{tmp_path}/out/", prices=PRICES, cost_estimate=1.5)["spend"]

    assert spend["billed_cost_usd"] == pytest.approx(expected_cost(job["batch_ids"]), rel=1e-12)
    assert spend["cost_usd"] < spend["billed_cost_usd"]  # the proof requests apart
    assert spend["cache_creation_input_tokens"] > 0
    assert spend["cache_read_input_tokens"] > 0
    assert set(spend["per_round"]) == {"1", "2", "3"}
    assert spend["estimated_cost_usd"] == 1.5
    assert spend["unpriced_models"] == []


def test_an_unpriced_model_is_reported_not_a_crash(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    spend = export(re_driven_job(), f"file://{tmp_path}/out/")["spend"]

    assert spend["unpriced_models"] == ["claude-emulator-test"]
    assert spend["complete"] is False
    assert spend["per_model"]["claude-emulator-test"]["cost_usd"] is None
    assert spend["output_tokens"] > 0


def test_the_merged_output_on_s3_holds_each_custom_id_once(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    job = re_driven_job()

    manifest = export(job, f"s3://{s3_bucket}/out/", dest_conn_id=S3_CONN_ID)

    ids: list[str] = []
    for entry in manifest["files"]:
        body = s3_endpoint.read(s3_bucket, f"out/{entry['name']}")
        ids += [json.loads(line)["custom_id"] for line in body.decode().splitlines()]
    assert sorted(ids) == sorted(["plain", "once-a", "once-b", "twice", "bad", "cached-1", "cached-2"])
