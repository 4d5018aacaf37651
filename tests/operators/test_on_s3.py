"""Every operator that reads or writes object storage, on S3: moto's server on loopback, reached through
``ObjectStoragePath`` and an ``aws`` connection, with the emulator as the API."""

from __future__ import annotations

import gzip
import json
from typing import Any

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.operators.support import requests, task_context


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def count(**kwargs: Any) -> dict[str, Any]:
    return AnthropicCountTokensOperator(task_id="count", **kwargs).execute(task_context())  # type: ignore[arg-type]


def test_count_tokens_reads_requests_from_s3(
    emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    uri = s3_endpoint.put(s3_bucket, "in/requests.jsonl", jsonl(requests(5)))

    summary = count(requests_path=uri, requests_conn_id=S3_CONN_ID)

    assert summary["request_count"] == 5
    assert summary["input_tokens"] == count(requests=requests(5))["input_tokens"]


def test_count_tokens_reads_gzipped_requests_from_s3(
    emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    uri = s3_endpoint.put(s3_bucket, "in/requests.jsonl.gz", gzip.compress(jsonl(requests(3))))

    assert count(requests_path=uri, requests_conn_id=S3_CONN_ID)["request_count"] == 3


def test_create_submits_requests_read_from_s3(
    emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    uri = s3_endpoint.put(s3_bucket, "in/requests.jsonl", jsonl(requests(4)))
    operator = AnthropicCreateBatchOperator(
        task_id="create", requests_path=uri, requests_conn_id=S3_CONN_ID, poll_interval=0.05, deferrable=False
    )

    manifest = operator.execute(task_context())  # type: ignore[arg-type]

    assert manifest["request_counts"]["succeeded"] == 4
    batch = emulator.admin.stats()
    assert sum(batch["batches_created"].values()) == 1


def test_export_writes_the_results_to_s3(emulator: Emulator, s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    created = AnthropicCreateBatchOperator(
        task_id="create", requests=requests(3), poll_interval=0.05, deferrable=False
    ).execute(task_context())  # type: ignore[arg-type]
    batch_id = created["batch_ids"][0]
    export = AnthropicBatchResultsToObjectStorageOperator(
        task_id="export", batch_id=batch_id, destination=f"s3://{s3_bucket}/out/", dest_conn_id=S3_CONN_ID
    )

    export.execute(task_context())  # type: ignore[arg-type]

    assert s3_endpoint.keys(s3_bucket) == ["out/_manifest.json", f"out/{batch_id}.jsonl"]
    lines = s3_endpoint.read(s3_bucket, f"out/{batch_id}.jsonl").splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["req-0", "req-1", "req-2"]
