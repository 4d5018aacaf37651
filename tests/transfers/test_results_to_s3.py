"""The results transfer against a real S3 endpoint (moto's server on loopback) via Airflow object storage."""

from __future__ import annotations

import gc
import gzip
import json
from typing import cast

import pytest
from airflow.sdk import Context, ObjectStoragePath

from airflow_provider_batches.errors import APIConnectionError
from airflow_provider_batches.transfers._publish import (
    UPLOAD_BLOCK_SIZE,
    DestinationNotFoundError,
    Staging,
)
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.transfers.conftest import FakeBatchesAPI, jsonl, make_operator, result_line

NO_CONTEXT = cast(Context, {})
PREFIX = "claude/2026-11-22/"


def big_batch(api: FakeBatchesAPI, batch_id: str = "msgbatch_big") -> bytes:
    """A batch larger than one upload part, so that S3 sees a real multipart upload."""
    lines = [result_line(f"r-{i}", padding=2_500) for i in range(UPLOAD_BLOCK_SIZE // 2_000)]
    return api.add_batch(batch_id, lines)


def test_writes_one_object_per_batch_and_the_manifest(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    first = api.add_batch("msgbatch_a", [result_line("a-1"), result_line("a-2", "errored")])
    second = api.add_batch("msgbatch_b", [result_line("b-1", "expired")])
    manifest = make_operator(api, batch_id=["msgbatch_a", "msgbatch_b"], destination=s3_destination).execute(
        NO_CONTEXT
    )
    assert s3_endpoint.keys(s3_bucket) == [
        f"{PREFIX}_manifest.json",
        f"{PREFIX}msgbatch_a.jsonl",
        f"{PREFIX}msgbatch_b.jsonl",
    ]
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}msgbatch_a.jsonl") == first
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}msgbatch_b.jsonl") == second
    assert json.loads(s3_endpoint.read(s3_bucket, f"{PREFIX}_manifest.json")) == manifest
    assert manifest["destination"] == f"s3://{s3_bucket}/claude/2026-11-22"


def test_a_multipart_sized_batch_arrives_whole(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    body = big_batch(api)
    assert len(body) > UPLOAD_BLOCK_SIZE
    make_operator(api, batch_id="msgbatch_big", destination=s3_destination).execute(NO_CONTEXT)
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}msgbatch_big.jsonl") == body
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_split_mode_with_gzip_writes_compressed_objects_per_result_type(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1"), result_line("a-2", "canceled")])
    api.add_batch("msgbatch_b", [result_line("b-1")])
    make_operator(
        api,
        batch_id=["msgbatch_a", "msgbatch_b"],
        destination=s3_destination,
        split_by_result_type=True,
        compression="gzip",
    ).execute(NO_CONTEXT)
    assert s3_endpoint.keys(s3_bucket) == [
        f"{PREFIX}_manifest.json",
        f"{PREFIX}canceled.jsonl.gz",
        f"{PREFIX}errored.jsonl.gz",
        f"{PREFIX}expired.jsonl.gz",
        f"{PREFIX}succeeded.jsonl.gz",
    ]
    succeeded = gzip.decompress(s3_endpoint.read(s3_bucket, f"{PREFIX}succeeded.jsonl.gz"))
    assert succeeded == jsonl([result_line("a-1"), result_line("b-1")])


def test_an_interrupted_download_is_retried_and_the_object_is_whole(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    body = big_batch(api)
    api.cut_downloads("msgbatch_big", after_bytes=len(body) - 1_000)
    make_operator(api, batch_id="msgbatch_big", destination=s3_destination).execute(NO_CONTEXT)
    assert api.downloads == ["msgbatch_big", "msgbatch_big"]
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}msgbatch_big.jsonl") == body


def test_exhausted_retries_leave_no_object_and_no_open_multipart_upload(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    body = big_batch(api)
    api.cut_downloads("msgbatch_big", after_bytes=len(body) - 1_000, times=2)
    operator = make_operator(api, batch_id="msgbatch_big", destination=s3_destination, download_retries=1)
    with pytest.raises(APIConnectionError):
        operator.execute(NO_CONTEXT)
    assert s3_endpoint.keys(s3_bucket) == []
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_a_count_mismatch_leaves_no_object(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")], counts={"succeeded": 1, "expired": 1})
    with pytest.raises(ResultsVerificationError, match="expired: expected 1, got 0"):
        make_operator(api, batch_id="msgbatch_a", destination=s3_destination).execute(NO_CONTEXT)
    assert s3_endpoint.keys(s3_bucket) == []
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_a_destination_in_a_missing_bucket_fails_before_any_download_and_creates_no_bucket(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    destination = ObjectStoragePath("s3://nosuchbucket/prefix/", conn_id=S3_CONN_ID)
    operator = make_operator(api, batch_id="msgbatch_a", destination=destination)
    with pytest.raises(
        DestinationNotFoundError, match=r"bucket 'nosuchbucket' does not exist.*aws s3 mb s3://nosuchbucket"
    ):
        operator.execute(NO_CONTEXT)
    assert "nosuchbucket" not in s3_endpoint.bucket_names()
    assert api.downloads == []


def test_a_rerun_without_overwrite_skips_the_complete_output(
    api: FakeBatchesAPI, s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    first = make_operator(api, batch_id="msgbatch_a", destination=s3_destination).execute(NO_CONTEXT)
    api.downloads.clear()
    second = make_operator(api, batch_id="msgbatch_a", destination=s3_destination).execute(NO_CONTEXT)
    assert second == first
    assert api.downloads == []


def test_an_aborted_staged_upload_leaves_nothing_behind(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    staging = Staging(s3_destination)
    staged = staging.open("part.jsonl")
    staged.write(b"x" * (UPLOAD_BLOCK_SIZE + 1))  # one part already uploaded
    staged.write(b"y" * 100)
    assert s3_endpoint.open_uploads(s3_bucket) != []
    staging.discard()
    staging.files.clear()
    del staged  # a garbage-collected file object must not complete the upload either
    gc.collect()
    assert s3_endpoint.keys(s3_bucket) == []
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_a_staged_object_holds_exactly_the_bytes_written_across_parts_even_from_a_reused_buffer(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    staging = Staging(s3_destination)
    staged = staging.open("parts.jsonl")
    lent = bytearray(UPLOAD_BLOCK_SIZE // 3 + 7)  # a writer that reuses its buffer after each write
    expected = b""
    for fill in b"abcdefg":  # more than two parts, the last one short
        lent[:] = bytes([fill]) * len(lent)
        staged.write(memoryview(lent))
        expected += bytes(lent)
    staged.close()
    staging.publish("parts.jsonl")
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}parts.jsonl") == expected
    assert staged.size == len(expected)
    assert s3_endpoint.open_uploads(s3_bucket) == []


def test_an_object_smaller_than_a_part_is_one_put_and_never_an_open_upload(
    s3_endpoint: S3Endpoint, s3_bucket: str, s3_destination: ObjectStoragePath
) -> None:
    staging = Staging(s3_destination)
    staged = staging.open("small.jsonl")
    staged.write(b'{"custom_id":"a"}\n')
    assert s3_endpoint.open_uploads(s3_bucket) == []
    staged.close()
    empty = staging.open("empty.jsonl")
    empty.close()
    staging.publish("small.jsonl")
    staging.publish("empty.jsonl")
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}small.jsonl") == b'{"custom_id":"a"}\n'
    assert s3_endpoint.read(s3_bucket, f"{PREFIX}empty.jsonl") == b""
    assert s3_endpoint.open_uploads(s3_bucket) == []
