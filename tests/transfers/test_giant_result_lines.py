"""Bounded memory in the transfer: a result line of any size streams to the destination in constant
memory (verification and metering included), or is refused clearly where an output needs it whole."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.testing import connection_json
from airflow_provider_batches.transfers.big_lines import BIG_LINE_BYTES, MAX_WHOLE_LINE_BYTES
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.transfers.test_results_from_emulator import ended_batch, transfer

CHILD = Path(__file__).with_name("giant_line_child.py")


def measured(emulator: Emulator, size: int, destination: Path, **options: Any) -> dict[str, Any]:
    """One transfer of a batch with a ``size``-byte line, in a fresh process: outcome and RSS growth."""
    env = {**os.environ, "AIRFLOW_CONN_ANTHROPIC_DEFAULT": connection_json(emulator)}
    done = subprocess.run(
        [sys.executable, str(CHILD), str(size), f"file://{destination}", json.dumps(options)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_200_mb_result_line_is_exported_with_memory_growth_under_64_mb(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = measured(emulator, 200_000_000, tmp_path)

    assert result["outcome"].startswith("exported"), result
    assert result["growth_mb"] < 64, result
    (written,) = (tmp_path / "giant").glob("msgbatch_*.jsonl")
    with written.open("rb") as lines:
        sizes = [len(line) for line in lines]
    assert len(sizes) == 3
    assert max(sizes) > 199_000_000


def test_a_200_mb_result_line_is_refused_for_parquet_with_memory_growth_under_64_mb(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = measured(emulator, 200_000_000, tmp_path, output_format="parquet")

    assert "refused: ResultsVerificationError" in result["outcome"], result
    assert "Export this batch as JSONL" in result["outcome"]
    assert result["growth_mb"] < 64, result


def test_a_big_line_is_copied_byte_for_byte_and_counted(emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"] * 3)
    emulator.admin.set_config(giant_result_bytes=3 * BIG_LINE_BYTES)

    manifest = transfer([batch.id], f"file://{tmp_path}/")

    lines = (tmp_path / f"{batch.id}.jsonl").read_bytes().split(b"\n")
    received = b"".join(AnthropicHook().iter_results_bytes(batch)).split(b"\n")
    assert lines == received  # byte for byte
    assert sorted(json.loads(line)["custom_id"] for line in lines if line) == ["req-0", "req-1", "req-2"]
    assert len(lines[0]) > 3 * BIG_LINE_BYTES - 1000
    assert manifest["counts"]["succeeded"] == 3
    assert manifest["spend"]["input_tokens"] > 0  # the big line was metered too


def test_a_big_line_that_is_not_json_is_refused_naming_it(emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"])
    emulator.admin.set_config(giant_result_bytes=2 * BIG_LINE_BYTES, results_tampering=["truncate"])

    with pytest.raises(
        ResultsVerificationError, match=r"line 1 is not valid JSON: the JSON object is cut off"
    ):
        transfer([batch.id], f"file://{tmp_path}/", download_retries=0)

    assert list(tmp_path.iterdir()) == []


def test_a_big_line_with_an_odd_custom_id_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"] * 2)
    emulator.admin.set_config(giant_result_bytes=2 * BIG_LINE_BYTES, results_tampering=["odd_custom_id"])

    with pytest.raises(ResultsVerificationError, match=r"has custom_id '\.\./\.\./x'"):
        transfer([batch.id], f"file://{tmp_path}/", download_retries=0)


def test_a_big_line_repeated_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    batch = ended_batch(["succeeded"] * 2)
    emulator.admin.set_config(giant_result_bytes=2 * BIG_LINE_BYTES, results_tampering=["duplicate"])

    with pytest.raises(ResultsVerificationError, match="appears twice"):
        transfer([batch.id], f"file://{tmp_path}/", download_retries=0)


def test_a_big_line_within_the_whole_line_bound_goes_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    batch = ended_batch(["succeeded"] * 2)
    emulator.admin.set_config(giant_result_bytes=2 * BIG_LINE_BYTES)

    transfer([batch.id], f"file://{tmp_path}/", output_format="parquet")

    assert 2 * BIG_LINE_BYTES < MAX_WHOLE_LINE_BYTES
    assert pq.read_table(tmp_path / f"{batch.id}.parquet").num_rows == 2


def test_a_big_line_streams_to_s3_gzipped_and_split_by_type(
    emulator: Emulator, s3_endpoint: S3Endpoint
) -> None:
    bucket = s3_endpoint.new_bucket()
    batch = ended_batch(["succeeded", "errored"])
    emulator.admin.set_config(giant_result_bytes=3 * BIG_LINE_BYTES)
    destination = ObjectStoragePath(f"s3://{bucket}/out/", conn_id=S3_CONN_ID)

    manifest = transfer([batch.id], destination, compression="gzip", split_by_result_type=True)

    succeeded = gzip.decompress(s3_endpoint.read(bucket, "out/succeeded.jsonl.gz")).split(b"\n")
    assert len(succeeded[0]) > 3 * BIG_LINE_BYTES - 1000
    assert manifest["counts"] == {"succeeded": 1, "errored": 1, "canceled": 0, "expired": 0}
    assert s3_endpoint.open_uploads(bucket) == []
