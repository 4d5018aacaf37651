"""Fixtures for the results transfer: a scripted results API (httpx.MockTransport) and destinations.

The S3 endpoint (``s3_endpoint``, ``s3_bucket``) is the moto server of tests/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import RESULT_TYPES
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.conftest import S3_CONN_ID
from tests.fakes import API_KEY, BASE_URL, batch_json

# -- result lines ---------------------------------------------------------------------------------


def result_line(custom_id: str, kind: str = "succeeded", *, padding: int = 0) -> dict[str, Any]:
    """One results line as the API writes it; ``padding`` makes a succeeded answer that much longer."""
    if kind == "succeeded":
        text = "answer " + "x" * padding
        result: dict[str, Any] = {
            "type": "succeeded",
            "message": {
                "id": f"msg_{custom_id}",
                "type": "message",
                "role": "assistant",
                "model": "claude-emulator-test",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 5, "service_tier": "batch"},
            },
        }
    elif kind == "errored":
        result = {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
        }
    else:
        result = {"type": kind}
    return {"custom_id": custom_id, "result": result}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


# -- the scripted API -----------------------------------------------------------------------------


class _CutStream(httpx.SyncByteStream):
    """A response body that breaks off after ``cut_at`` bytes, like a dropped connection."""

    def __init__(self, body: bytes, cut_at: int) -> None:
        self.body = body
        self.cut_at = cut_at

    def __iter__(self) -> Iterator[bytes]:
        yield self.body[: self.cut_at]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class FakeBatchesAPI:
    """Answers ``GET /v1/messages/batches/{id}`` and the results URL of the batches it was given."""

    def __init__(self) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.bodies: dict[str, bytes] = {}
        self.cuts: dict[str, list[int]] = {}
        self.downloads: list[str] = []

    def add_batch(
        self,
        batch_id: str,
        lines: list[dict[str, Any]] | None = None,
        *,
        body: bytes | None = None,
        counts: dict[str, int] | None = None,
        **fields: Any,
    ) -> bytes:
        """Register an ended batch; request_counts are counted from ``lines`` unless ``counts`` is given."""
        lines = lines or []
        body = jsonl(lines) if body is None else body
        if counts is None:
            counts = dict.fromkeys(RESULT_TYPES, 0)
            for line in lines:
                counts[line["result"]["type"]] += 1
        batch = batch_json(batch_id, status="ended", **fields)
        batch["request_counts"] = {"processing": 0, **counts}
        self.batches[batch_id] = batch
        self.bodies[batch_id] = body
        return body

    def cut_downloads(self, batch_id: str, after_bytes: int, times: int = 1) -> None:
        """The next ``times`` downloads of the batch break off after ``after_bytes`` bytes."""
        self.cuts.setdefault(batch_id, []).extend([after_bytes] * times)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")  # v1 messages batches {id} [results]
        batch_id = parts[3]
        if batch_id not in self.batches:
            return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error"}})
        if parts[-1] != "results":
            return httpx.Response(200, json=self.batches[batch_id])
        self.downloads.append(batch_id)
        body = self.bodies[batch_id]
        if self.cuts.get(batch_id):
            return httpx.Response(200, stream=_CutStream(body, self.cuts[batch_id].pop(0)))
        return httpx.Response(200, content=body)

    def hook(self) -> AnthropicHook:
        return AnthropicHook(transport=httpx.MockTransport(self))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeBatchesAPI:
    conn = {"conn_type": "anthropic_batches", "host": BASE_URL, "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(conn))
    return FakeBatchesAPI()


def make_operator(api: FakeBatchesAPI, **kwargs: Any) -> AnthropicBatchResultsToObjectStorageOperator:
    """The operator wired to ``api`` at the transport level; retried downloads do not wait."""
    kwargs.setdefault("download_retry_delay", 0)
    operator = AnthropicBatchResultsToObjectStorageOperator(task_id="results", **kwargs)
    operator.hook = api.hook()
    return operator


# -- destinations ---------------------------------------------------------------------------------


@pytest.fixture
def local_destination(tmp_path: Any) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{tmp_path}/claude/2026-11-22/")


@pytest.fixture
def s3_destination(s3_bucket: str) -> ObjectStoragePath:
    return ObjectStoragePath(f"s3://{s3_bucket}/claude/2026-11-22/", conn_id=S3_CONN_ID)
