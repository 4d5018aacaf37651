"""The results transfer against ``file://`` storage, with the API scripted at the HTTP transport."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Asset, Context, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_batches.errors import APIConnectionError, BatchNotReadyError
from airflow_provider_batches.transfers import results_to_object_storage as transfer_module
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
    DestinationConflictError,
)
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from airflow_provider_batches.transfers.writer import TransferProgress
from tests.transfers.conftest import FakeBatchesAPI, jsonl, make_operator, result_line

NO_CONTEXT = cast(Context, {})


def local(destination: ObjectStoragePath) -> Path:
    return Path(destination.path)


def published(destination: ObjectStoragePath) -> list[str]:
    """Every file under the destination, hidden staging files included."""
    root = local(destination)
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def two_batches(api: FakeBatchesAPI) -> tuple[bytes, bytes]:
    first = api.add_batch(
        "msgbatch_a",
        [result_line("a-1"), result_line("a-2", "errored"), result_line("a-3", "expired")],
    )
    second = api.add_batch("msgbatch_b", [result_line("b-1"), result_line("b-2", "canceled")])
    return first, second


# -- one file per batch ---------------------------------------------------------------------------


def test_writes_one_file_per_batch_with_the_results_bytes(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    first, second = two_batches(api)
    make_operator(api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination).execute(
        NO_CONTEXT
    )
    assert published(local_destination) == ["_manifest.json", "msgbatch_a.jsonl", "msgbatch_b.jsonl"]
    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == first
    assert (local(local_destination) / "msgbatch_b.jsonl").read_bytes() == second


def test_returns_the_manifest_it_writes_last(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    manifest = make_operator(
        api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination
    ).execute(NO_CONTEXT)
    assert json.loads((local(local_destination) / "_manifest.json").read_bytes()) == manifest
    assert manifest["batch_ids"] == ["msgbatch_a", "msgbatch_b"]
    assert manifest["counts"] == {"succeeded": 2, "errored": 1, "canceled": 1, "expired": 1}
    assert manifest["batches"]["msgbatch_b"] == {"succeeded": 1, "errored": 0, "canceled": 1, "expired": 0}
    assert manifest["results"] == 5
    assert manifest["destination"] == f"file://{local(local_destination)}"


def test_manifest_records_size_and_sha256_of_each_published_file(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    manifest = make_operator(
        api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination
    ).execute(NO_CONTEXT)
    for entry in manifest["files"]:
        data = (local(local_destination) / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == sum(entry["bytes"] for entry in manifest["files"])


def test_accepts_the_create_operators_manifest_as_batch_id(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    created = {"batch_ids": ["msgbatch_a", "msgbatch_b"], "requests": 5}
    manifest = make_operator(api, batch_id=created, destination=local_destination).execute(NO_CONTEXT)
    assert manifest["batch_ids"] == ["msgbatch_a", "msgbatch_b"]


def test_accepts_a_destination_string_and_creates_missing_folders(
    api: FakeBatchesAPI, tmp_path: Path
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    destination = f"file://{tmp_path}/deep/er/prefix/"
    make_operator(api, batch_id="msgbatch_a", destination=destination).execute(NO_CONTEXT)
    assert (tmp_path / "deep/er/prefix/msgbatch_a.jsonl").exists()


def test_normalizes_crlf_and_blank_lines_to_plain_jsonl(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    lines = [result_line("a-1"), result_line("a-2")]
    body = b"\r\n\r\n".join(json.dumps(line).encode() for line in lines)  # and no final newline
    api.add_batch("msgbatch_a", lines, body=body)
    make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == jsonl(lines)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 20])
def test_lines_split_across_chunks_are_verified_and_written_exactly(
    api: FakeBatchesAPI,
    local_destination: ObjectStoragePath,
    monkeypatch: pytest.MonkeyPatch,
    chunk_size: int,
) -> None:
    monkeypatch.setattr(transfer_module, "CHUNK_SIZE", chunk_size)
    lines = [result_line(f"a-{i}", kind) for i, kind in enumerate(["succeeded", "errored"] * 3)]
    encoded = [json.dumps(line).encode() for line in lines]
    body = encoded[0] + b"\r\n" + b"\n".join(encoded[1:4]) + b"\n\n  \n" + b"\n".join(encoded[4:])
    api.add_batch("msgbatch_a", lines, body=body)
    manifest = make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == jsonl(lines)
    assert manifest["counts"]["errored"] == 3


def test_an_empty_batch_gives_an_empty_file(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [])
    manifest = make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == b""
    assert manifest["results"] == 0


# -- split by result type -------------------------------------------------------------------------


def test_split_mode_writes_one_file_per_result_type_with_lines_from_every_batch(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    make_operator(
        api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination, split_by_result_type=True
    ).execute(NO_CONTEXT)
    root = local(local_destination)
    assert published(local_destination) == [
        "_manifest.json",
        "canceled.jsonl",
        "errored.jsonl",
        "expired.jsonl",
        "succeeded.jsonl",
    ]
    assert (root / "succeeded.jsonl").read_bytes() == jsonl([result_line("a-1"), result_line("b-1")])
    assert (root / "errored.jsonl").read_bytes() == jsonl([result_line("a-2", "errored")])
    assert (root / "canceled.jsonl").read_bytes() == jsonl([result_line("b-2", "canceled")])
    assert (root / "expired.jsonl").read_bytes() == jsonl([result_line("a-3", "expired")])


def test_split_mode_writes_every_result_type_file_even_when_empty(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    manifest = make_operator(
        api, batch_id="msgbatch_a", destination=local_destination, split_by_result_type=True
    ).execute(NO_CONTEXT)
    files = {entry["name"]: entry["results"] for entry in manifest["files"]}
    assert files == {"succeeded.jsonl": 1, "errored.jsonl": 0, "canceled.jsonl": 0, "expired.jsonl": 0}


# -- gzip -----------------------------------------------------------------------------------------


def test_gzip_writes_compressed_files_that_decompress_to_the_results(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    first, _ = two_batches(api)
    manifest = make_operator(
        api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination, compression="gzip"
    ).execute(NO_CONTEXT)
    stored = (local(local_destination) / "msgbatch_a.jsonl.gz").read_bytes()
    assert gzip.decompress(stored) == first
    entry = next(entry for entry in manifest["files"] if entry["name"] == "msgbatch_a.jsonl.gz")
    assert entry["sha256"] == hashlib.sha256(stored).hexdigest()
    assert entry["bytes"] == len(stored)


def test_gzip_output_is_byte_identical_when_rewritten(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    options: dict[str, Any] = {
        "batch_id": "msgbatch_a",
        "destination": local_destination,
        "compression": "gzip",
    }
    first = make_operator(api, **options).execute(NO_CONTEXT)
    second = make_operator(api, overwrite=True, **options).execute(NO_CONTEXT)
    assert first["files"] == second["files"]


def test_refuses_an_unknown_compression() -> None:
    with pytest.raises(ValueError, match="compression"):
        AnthropicBatchResultsToObjectStorageOperator(
            task_id="results",
            batch_id="msgbatch_a",
            destination="file:///tmp/x/",
            compression="zstd",  # type: ignore[arg-type]
        )


# -- interrupted downloads ------------------------------------------------------------------------


def test_an_interrupted_download_is_retried_from_the_start(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    body = api.add_batch("msgbatch_a", [result_line(f"a-{i}", padding=100) for i in range(20)])
    api.cut_downloads("msgbatch_a", after_bytes=len(body) // 2)
    manifest = make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert api.downloads == ["msgbatch_a", "msgbatch_a"]
    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == body
    assert manifest["results"] == 20


def test_a_retried_download_in_split_mode_writes_no_line_twice(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    lines = [result_line(f"b-{i}", "succeeded" if i % 2 else "errored") for i in range(10)]
    body = api.add_batch("msgbatch_b", lines)
    api.cut_downloads("msgbatch_b", after_bytes=len(body) // 2)
    make_operator(
        api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination, split_by_result_type=True
    ).execute(NO_CONTEXT)
    succeeded = (local(local_destination) / "succeeded.jsonl").read_bytes().splitlines()
    assert len(succeeded) == len(set(succeeded)) == 6


def test_exhausted_download_retries_fail_and_publish_nothing(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    body = api.add_batch("msgbatch_a", [result_line(f"a-{i}") for i in range(10)])
    api.cut_downloads("msgbatch_a", after_bytes=len(body) // 2, times=3)
    operator = make_operator(api, batch_id="msgbatch_a", destination=local_destination, download_retries=2)
    with pytest.raises(APIConnectionError, match="failed 3 time"):
        operator.execute(NO_CONTEXT)
    assert published(local_destination) == []


def test_a_failure_in_a_later_batch_publishes_no_earlier_batch(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    api.add_batch("msgbatch_b", [result_line("b-1")], counts={"succeeded": 2})
    operator = make_operator(api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination)
    with pytest.raises(ResultsVerificationError, match="batch msgbatch_b: .*succeeded: expected 2, got 1"):
        operator.execute(NO_CONTEXT)
    assert published(local_destination) == []


def test_leaves_no_staging_folder_after_success_or_failure(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    api.add_batch("msgbatch_b", [result_line("b-1")], counts={"succeeded": 2})
    make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    with pytest.raises(ResultsVerificationError):
        make_operator(api, batch_id="msgbatch_b", destination=local_destination, overwrite=True).execute(
            NO_CONTEXT
        )
    assert sorted(path.name for path in local(local_destination).iterdir()) == [
        "_manifest.json",
        "msgbatch_a.jsonl",
    ]


# -- verification ---------------------------------------------------------------------------------


def test_a_count_mismatch_fails_and_publishes_nothing(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1"), result_line("a-2")], counts={"succeeded": 3})
    operator = make_operator(api, batch_id="msgbatch_a", destination=local_destination)
    with pytest.raises(ResultsVerificationError, match="succeeded: expected 3, got 2"):
        operator.execute(NO_CONTEXT)
    assert published(local_destination) == []


def test_a_result_type_count_mismatch_fails_even_when_the_total_matches(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch(
        "msgbatch_a", [result_line("a-1"), result_line("a-2")], counts={"succeeded": 1, "errored": 1}
    )
    with pytest.raises(ResultsVerificationError, match="errored: expected 1, got 0"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)


def test_a_line_that_is_not_json_fails_naming_the_line(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    body = jsonl([result_line("a-1")]) + b'{"custom_id": "a-2", "result": \n'
    api.add_batch("msgbatch_a", body=body, counts={"succeeded": 2})
    with pytest.raises(ResultsVerificationError, match="line 2 is not valid JSON"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert published(local_destination) == []


@pytest.mark.parametrize(
    "between",
    [b"\n", b"  \n"],
    ids=["blank line", "whitespace line"],
)
def test_a_line_holding_two_results_fails_even_when_a_blank_line_evens_the_count(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath, between: bytes
) -> None:
    two = json.dumps(result_line("a-1")).encode() + b" " + json.dumps(result_line("a-2")).encode()
    body = two + b"\n" + between + jsonl([result_line("a-3")])  # 3 lines, 3 values: one block
    api.add_batch("msgbatch_a", body=body, counts={"succeeded": 3})
    with pytest.raises(ResultsVerificationError, match="line 1 is not valid JSON"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert published(local_destination) == []


def test_a_result_spread_over_two_lines_fails_even_beside_a_line_holding_two(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    spread = b'{"custom_id": "a-1", "result":\n{"type": "succeeded"}}'
    two = json.dumps(result_line("a-2")).encode() + json.dumps(result_line("a-3")).encode()
    body = spread + b"\n" + two + b"\n"  # 3 lines, 3 values: the count alone would pass it
    api.add_batch("msgbatch_a", body=body, counts={"succeeded": 3})
    with pytest.raises(ResultsVerificationError, match="line 1 is not valid JSON"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert published(local_destination) == []


def test_a_line_without_custom_id_fails(api: FakeBatchesAPI, local_destination: ObjectStoragePath) -> None:
    api.add_batch("msgbatch_a", body=b'{"result": {"type": "succeeded"}}\n', counts={"succeeded": 1})
    with pytest.raises(ResultsVerificationError, match="line 1 is not a result line.*custom_id"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)


def test_a_repeated_custom_id_fails(api: FakeBatchesAPI, local_destination: ObjectStoragePath) -> None:
    api.add_batch("msgbatch_a", body=jsonl([result_line("a-1"), result_line("a-1")]), counts={"succeeded": 2})
    with pytest.raises(ResultsVerificationError, match="'a-1' appears twice"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert published(local_destination) == []


def test_a_result_type_newer_than_the_code_gets_its_own_file_in_split_mode(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1"), result_line("a-2", "deferred")], counts={"succeeded": 1})
    api.batches["msgbatch_a"]["request_counts"]["deferred"] = 1
    manifest = make_operator(
        api, batch_id="msgbatch_a", destination=local_destination, split_by_result_type=True
    ).execute(NO_CONTEXT)
    assert manifest["counts"]["deferred"] == 1
    assert (local(local_destination) / "deferred.jsonl").read_bytes() == jsonl(
        [result_line("a-2", "deferred")]
    )


# -- batches that are not ready -------------------------------------------------------------------


def test_refuses_a_batch_that_has_not_ended(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    api.batches["msgbatch_a"].update(processing_status="in_progress", results_url=None, ended_at=None)
    with pytest.raises(BatchNotReadyError, match="msgbatch_a is in_progress"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert api.downloads == []
    assert published(local_destination) == []


def test_refuses_a_batch_whose_results_are_archived(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")], archived_at="2026-12-21T10:00:00Z")
    with pytest.raises(BatchNotReadyError, match="archived at 2026-12-21 10:00Z"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    assert api.downloads == []


def test_checks_every_batch_before_downloading_any(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    api.add_batch("msgbatch_a", [result_line("a-1")])
    api.add_batch("msgbatch_b", [result_line("b-1")])
    api.batches["msgbatch_b"].update(processing_status="canceling", results_url=None)
    with pytest.raises(BatchNotReadyError, match="msgbatch_b is canceling"):
        make_operator(api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination).execute(
            NO_CONTEXT
        )
    assert api.downloads == []


# -- re-runs --------------------------------------------------------------------------------------


def test_a_rerun_without_overwrite_keeps_a_complete_output_and_returns_its_manifest(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    first = make_operator(api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination).execute(
        NO_CONTEXT
    )
    api.downloads.clear()
    second = make_operator(api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination).execute(
        NO_CONTEXT
    )
    assert second == first
    assert api.downloads == []


def test_a_rerun_without_overwrite_rewrites_an_output_with_a_missing_file(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    first_body, _ = two_batches(api)
    options: dict[str, Any] = {"batch_id": ["msgbatch_a", "msgbatch_b"], "destination": local_destination}
    make_operator(api, **options).execute(NO_CONTEXT)
    (local(local_destination) / "msgbatch_a.jsonl").write_bytes(first_body[:10])  # truncated behind our back
    api.downloads.clear()
    make_operator(api, **options).execute(NO_CONTEXT)
    assert api.downloads == ["msgbatch_a", "msgbatch_b"]
    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == first_body


def test_a_rerun_without_overwrite_refuses_a_destination_holding_other_results(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    with pytest.raises(DestinationConflictError, match="output of other inputs"):
        make_operator(api, batch_id="msgbatch_b", destination=local_destination).execute(NO_CONTEXT)


def test_a_rerun_with_other_options_counts_as_other_inputs(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    with pytest.raises(DestinationConflictError, match="overwrite=True"):
        make_operator(api, batch_id="msgbatch_a", destination=local_destination, compression="gzip").execute(
            NO_CONTEXT
        )


def test_a_rerun_with_overwrite_rewrites_the_same_bytes(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    options: dict[str, Any] = {"batch_id": ["msgbatch_a", "msgbatch_b"], "destination": local_destination}
    first = make_operator(api, **options).execute(NO_CONTEXT)
    api.downloads.clear()
    second = make_operator(api, overwrite=True, **options).execute(NO_CONTEXT)
    assert api.downloads == ["msgbatch_a", "msgbatch_b"]
    assert second["files"] == first["files"]


# -- Airflow integration --------------------------------------------------------------------------


def test_template_fields_are_the_batch_ids_the_destination_and_the_estimate() -> None:
    assert AnthropicBatchResultsToObjectStorageOperator.template_fields == (
        "batch_id",
        "destination",
        "dest_conn_id",
        "cost_estimate",
    )


def test_outlets_get_an_asset_event_with_the_counts(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath
) -> None:
    two_batches(api)
    asset = Asset("file:///results/claude")
    events = OutletEventAccessors()
    operator = make_operator(
        api, batch_id=["msgbatch_a", "msgbatch_b"], destination=local_destination, outlets=[asset]
    )
    manifest = operator.execute(cast(Context, {"outlet_events": events}))
    extra = events[asset].extra
    assert extra["counts"] == manifest["counts"]
    assert extra["destination"] == manifest["destination"]
    assert extra["batch_ids"] == ["msgbatch_a", "msgbatch_b"]


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


def test_progress_is_logged_once_per_interval_with_bytes_results_and_throughput() -> None:
    now = [0.0]
    log = RecordingLog()
    progress = TransferProgress(log, interval=10, clock=lambda: now[0])
    progress.advance(5_000_000, 1_000, "msgbatch_a")
    now[0] = 9.9
    progress.advance(5_000_000, 1_000, "msgbatch_a")
    assert log.lines == []
    now[0] = 10.0
    progress.advance(10_000_000, 2_000, "msgbatch_a")
    assert log.lines == ["Transferring msgbatch_a: 20.0 MB, 4,000 results, 2.0 MB/s"]


def test_a_local_destination_is_written_and_kept_without_airflows_filesystem_registry(
    api: FakeBatchesAPI, local_destination: ObjectStoragePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ObjectStoragePath.fs`` (whose first use imports every provider's filesystems) is never used
    for ``file://``: a first run publishes, and a second finds the output complete and keeps it."""
    body = api.add_batch("msgbatch_a", [result_line("a-1"), result_line("a-2", "errored")])

    def refused(self: ObjectStoragePath) -> Any:
        raise AssertionError(f"ObjectStoragePath.fs used for {self}")

    monkeypatch.setattr(ObjectStoragePath, "fs", property(refused))
    first = make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)
    again = make_operator(api, batch_id="msgbatch_a", destination=local_destination).execute(NO_CONTEXT)

    assert (local(local_destination) / "msgbatch_a.jsonl").read_bytes() == body
    assert again == first
    assert published(local_destination) == ["_manifest.json", "msgbatch_a.jsonl"]
