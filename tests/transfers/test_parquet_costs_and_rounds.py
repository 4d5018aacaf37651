"""The Parquet ``cost_usd`` adds up to the manifest's spend, and ``round`` says which round answered.

A real job runs against the emulator (the create operator, so re-drive rounds are real) with the
hardest cases for the per-row cost: a model priced only through ``prices=``, 1-hour and 5-minute
cache writes and a cache read, a request over Claude Haiku 5.5's long-context threshold, and an
errored result. The expected row costs are computed here by hand from the raw usage.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.proof import is_proof_id
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.operators.support import request, task_context
from tests.transfers.test_results_rounds import PRICES, export, re_driven_job

HAIKU_5_5 = "claude-haiku-5-5"  # in the price table with a long-context tier over 100,000 prompt tokens
LONG_PROMPT = "lorem ipsum " * 40_000  # about 120,000 tokens by the emulator's count


def cached_system(ttl: str) -> list[dict[str, Any]]:
    control = {"type": "ephemeral", "ttl": ttl}
    return [{"type": "text", "text": f"shared {ttl} instructions " * 40, "cache_control": control}]


def priced_job() -> dict[str, Any]:
    """One round: every kind of usage the cost formula prices apart, and one errored request."""
    reqs = [
        request("plain", "hello"),
        request("write-1h", "a", system=cached_system("1h")),
        request("read-1h", "b", system=cached_system("1h")),
        request("write-5m", "c", system=cached_system("5m")),
        request("long", LONG_PROMPT, model=HAIKU_5_5),
        request("short", "d", model=HAIKU_5_5),
        request("failed", "e [emulator:errored=invalid_request_error]"),
    ]
    operator = AnthropicCreateBatchOperator(
        task_id="create", requests=reqs, poll_interval=0.05, deferrable=False, max_error_rate=0.5
    )
    manifest: dict[str, Any] = operator.execute(task_context())
    return manifest


def by_hand(row: dict[str, Any]) -> float:
    """Batch-rate cost of one row's (or message's) usage: prices= for the emulator's model, Haiku
    5.5's table rates (x5 for every token of a prompt over 100,000 tokens); 1-hour writes 2x input,
    5-minute 1.25x, reads 0.1x, all at half price."""
    usage: dict[str, Any] = row["usage"]
    writes = usage.get("cache_creation_input_tokens") or 0
    one_hour = (usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0
    reads = usage.get("cache_read_input_tokens") or 0
    if row["model"] == HAIKU_5_5:
        prompt = usage["input_tokens"] + writes + reads
        input_price, output_price = (0.50, 2.50) if prompt > 100_000 else (0.10, 0.50)
    else:
        input_price, output_price = PRICES[row["model"]]["input"], PRICES[row["model"]]["output"]
    standard = (
        usage["input_tokens"] * input_price
        + (writes - one_hour) * 1.25 * input_price
        + one_hour * 2.0 * input_price
        + reads * 0.1 * input_price
        + usage["output_tokens"] * output_price
    )
    return float(standard / 1e6 * 0.5)


def proofs_cost(job: dict[str, Any]) -> float:
    """What the job's proof requests cost: billed like any request, so in the manifest's spend, but
    never a row of the output (they are not the user's requests)."""
    lines = [
        result.model_dump(mode="json")
        for batch_id in job["batch_ids"]
        for result in AnthropicHook().iter_results(batch_id)
        if is_proof_id(result.custom_id)
    ]
    assert lines, "the create operator put a proof request in every batch"
    messages = [line["result"].get("message") for line in lines]
    return math.fsum(by_hand(message) for message in messages if message is not None)


def assert_spend_adds_up(spend: dict[str, Any], rows: dict[str, dict[str, Any]], job: dict[str, Any]) -> None:
    """The spend's ``cost_usd`` is exactly the rows' sum; the proof requests' apart; billed is both."""
    assert spend["cost_usd"] == pytest.approx(rows_total(rows), rel=1e-12, abs=1e-15)
    assert spend["proofs"]["cost_usd"] == pytest.approx(proofs_cost(job), rel=1e-12)
    assert spend["billed_cost_usd"] == pytest.approx(
        spend["cost_usd"] + spend["proofs"]["cost_usd"], rel=1e-12
    )


def parquet_rows(manifest: dict[str, Any], read: Any) -> dict[str, dict[str, Any]]:
    """The published Parquet rows by custom_id, each with its raw ``usage`` beside the columns."""
    tables = [
        pq.read_table(io.BytesIO(read(entry["name"])))
        for entry in manifest["files"]
        if entry["name"].endswith(".parquet")
    ]
    rows = pa.concat_tables(tables).to_pylist()
    for row in rows:
        message = json.loads(row["raw"])["result"].get("message")
        row["usage"] = (message or {}).get("usage")
    return {row["custom_id"]: row for row in rows}


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any], Any]:
    """A destination and how to read a published file back: a local folder, or a bucket on moto."""
    if request.param == "file":
        return f"file://{tmp_path}/out/", {}, lambda name: (tmp_path / "out" / name).read_bytes()
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    return (
        f"s3://{bucket}/out/",
        {"dest_conn_id": S3_CONN_ID},
        lambda name: endpoint.read(bucket, f"out/{name}"),
    )


def exported(job: dict[str, Any], store: tuple[str, dict[str, Any], Any]) -> tuple[dict[str, Any], Any]:
    """The transfer's manifest for ``job`` exported to Parquet with ``prices=``, and its rows."""
    destination, options, read = store
    manifest = export(job, destination, output_format="parquet", prices=PRICES, **options)
    return manifest, parquet_rows(manifest, read)


def rows_total(rows: dict[str, dict[str, Any]]) -> float:
    return math.fsum(row["cost_usd"] for row in rows.values() if row["cost_usd"] is not None)


def test_the_row_costs_add_up_to_the_manifest_spend_with_prices_cache_tiers_and_long_context(
    anthropic_emulator: Emulator, store: tuple[str, dict[str, Any], Any]
) -> None:
    job = priced_job()

    manifest, rows = exported(job, store)

    assert rows["write-1h"]["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] > 0
    assert rows["read-1h"]["cache_read_input_tokens"] > 0
    assert rows["long"]["input_tokens"] > 100_000
    for custom_id, row in rows.items():
        if custom_id == "failed":
            continue
        assert row["cost_usd"] == pytest.approx(by_hand(row), rel=1e-12), custom_id
    assert rows["failed"]["result_type"] == "errored"
    assert rows["failed"]["cost_usd"] is None
    assert manifest["spend"]["complete"] is True
    assert_spend_adds_up(manifest["spend"], rows, job)


def test_an_unpriced_model_has_null_costs_and_the_spend_says_it_is_incomplete(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    manifest = export(priced_job(), f"file://{tmp_path}/out/", output_format="parquet")  # no prices=

    rows = parquet_rows(manifest, lambda name: (tmp_path / "out" / name).read_bytes())
    assert rows["plain"]["cost_usd"] is None
    assert rows["short"]["cost_usd"] == pytest.approx(by_hand(rows["short"]), rel=1e-12)
    assert manifest["spend"]["unpriced_models"] == ["claude-emulator-test"]


def test_each_row_holds_the_round_that_answered_it_and_the_costs_of_all_rounds_add_up(
    anthropic_emulator: Emulator, store: tuple[str, dict[str, Any], Any]
) -> None:
    job = re_driven_job()

    manifest, rows = exported(job, store)

    assert {custom_id: row["round"] for custom_id, row in rows.items()} == {
        "plain": 1,
        "once-a": 2,
        "once-b": 2,
        "twice": 3,
        "bad": 1,  # not retryable: its round-1 answer is final
        "cached-1": 1,
        "cached-2": 1,
    }
    rounds = {entry["round"]: set(entry["batch_ids"]) for entry in job["rounds"]}
    assert all(row["batch_id"] in rounds[row["round"]] for row in rows.values())
    assert_spend_adds_up(manifest["spend"], rows, job)


def test_a_file_of_several_batches_and_rounds_labels_every_row_with_its_own(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    job = re_driven_job()

    manifest = export(
        job, ObjectStoragePath(f"file://{tmp_path}/out/"), output_format="parquet", split_by_result_type=True
    )

    rows = parquet_rows(manifest, lambda name: (tmp_path / "out" / name).read_bytes())
    assert rows["twice"]["round"] == 3
    assert rows["once-a"]["round"] == 2
    assert rows["plain"]["round"] == 1
