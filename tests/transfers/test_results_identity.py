"""The end-to-end identity check: a job's results are published only if they are the job's own.

The create operator's manifest names, per batch, its request count and custom_id digest; the transfer
refuses to publish any batch whose results carry another set. Run against the emulator, on file://
and on S3 (moto), with the real create operator making the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context, ObjectStoragePath

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from tests.conftest import S3Endpoint
from tests.operators.support import request, task_context

NO_CONTEXT = cast(Context, {})


def job(prefix: str, count: int, **kwargs: Any) -> dict[str, Any]:
    """Run the create operator on ``count`` requests named ``<prefix>-<n>``: its manifest."""
    operator = AnthropicCreateBatchOperator(
        task_id=f"create_{prefix}",
        requests=[request(f"{prefix}-{index}") for index in range(count)],
        poll_interval=0.05,
        deferrable=False,
        **kwargs,
    )
    manifest: dict[str, Any] = operator.execute(task_context())
    return manifest


def export(batch_id: Any, destination: ObjectStoragePath | str) -> dict[str, Any]:
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=batch_id, destination=destination, download_retry_delay=0
    )
    result: dict[str, Any] = operator.execute(NO_CONTEXT)
    return result


def swapped(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """``mine`` as a recovery bug would leave it: its record names ``theirs``'s batch of the same size."""
    (my_id,) = mine["batch_ids"]
    (their_id,) = theirs["batch_ids"]
    return {**mine, "batch_ids": [their_id], "batches": {their_id: mine["batches"][my_id]}}


def test_a_jobs_own_results_are_checked_and_published(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    manifest = job("mine", 5, max_requests_per_batch=3)

    published = export(manifest, f"file://{tmp_path}/out/")

    assert published["counts"]["succeeded"] == 5
    for batch_id in manifest["batch_ids"]:
        assert published["custom_ids"][batch_id]["checked"] is True
        assert (
            published["custom_ids"][batch_id]["custom_ids_digest"]
            == (manifest["batches"][batch_id]["custom_ids_digest"])
        )


def test_another_jobs_results_of_the_same_size_are_never_published(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    mine, theirs = job("mine", 4), job("theirs", 4)

    with pytest.raises(ResultsVerificationError, match="another job.s batch"):
        export(swapped(mine, theirs), f"file://{tmp_path}/out/")

    assert not list((tmp_path / "out").rglob("*.jsonl"))
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_another_jobs_results_are_never_published_to_s3(
    anthropic_emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    mine, theirs = job("mine", 3), job("theirs", 3)

    with pytest.raises(ResultsVerificationError, match="another job.s batch"):
        export(swapped(mine, theirs), s3_destination)

    assert s3_endpoint.keys(s3_bucket) == []
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_plain_batch_ids_are_published_unchecked(anthropic_emulator: Emulator, tmp_path: Path) -> None:
    manifest = job("mine", 2)

    published = export(manifest["batch_ids"], f"file://{tmp_path}/out/")

    (batch_id,) = manifest["batch_ids"]
    assert published["custom_ids"][batch_id]["checked"] is False
    on_disk = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert (
        on_disk["custom_ids"][batch_id]["custom_ids_digest"]
        == manifest["batches"][batch_id]["custom_ids_digest"]
    )


# -- the proof request --------------------------------------------------------------------------


def test_a_same_template_jobs_batch_with_equal_custom_ids_is_refused_by_its_proof(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    """Jobs from one template have equal custom_id digests: only the proof tells their batches apart."""
    mine, theirs = job("same", 4), job("same", 4)
    (my_id,), (their_id,) = mine["batch_ids"], theirs["batch_ids"]
    assert mine["batches"][my_id]["custom_ids_digest"] == theirs["batches"][their_id]["custom_ids_digest"]

    with pytest.raises(ResultsVerificationError, match="carry proof request .* not the job's"):
        export(swapped(mine, theirs), f"file://{tmp_path}/out/")

    assert not list((tmp_path / "out").rglob("*.jsonl"))


def test_the_proof_line_is_never_published_and_the_manifest_accounts_for_it(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    manifest = job("mine", 5, max_requests_per_batch=3)
    anthropic_emulator.admin.set_config(  # the first download is cut: the ledger sees the proof twice
        cut_results_after_bytes=1500, cut_results_fraction=0.0, next_faults=["cut"]
    )

    published = export(manifest, f"file://{tmp_path}/out/")

    lines = [line for path in (tmp_path / "out").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(json.loads(line)["custom_id"] for line in lines) == [f"mine-{i}" for i in range(5)]
    assert published["counts"]["succeeded"] == 5
    assert published["results"] == 5
    assert published["proof_requests"] == dict.fromkeys(manifest["batch_ids"], "succeeded")


def test_a_batch_lacking_the_jobs_proof_request_is_refused(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    manifest = job("mine", 3)
    (batch_id,) = manifest["batch_ids"]
    forged = {**manifest["batches"][batch_id], "proof_custom_id": "abp-proof-" + "0" * 32}

    with pytest.raises(ResultsVerificationError, match="another job's batch"):
        export({**manifest, "batches": {batch_id: forged}}, f"file://{tmp_path}/out/")
