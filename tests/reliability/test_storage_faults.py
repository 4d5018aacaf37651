"""Item 6: the S3 endpoint fails in the middle of a multipart upload of the results.

A loopback HTTP proxy in front of moto's S3 server lets the first part of each upload through, then
answers 503 to every further part (past botocore's own retries). The transfer must fail, leave no
object under the final path and no open multipart upload; once S3 is healthy again, a re-run
publishes everything.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.conftest import S3Endpoint
from tests.operators.support import task_context
from tests.reliability.conftest import FIGURES, ask, assert_no_secret, connection

REQUESTS = 16_000  # about 10 MB of results: more than one 8 MiB upload part


class FailingS3Proxy:
    """Forwards to S3; while ``failing``, answers 503 to upload parts after the first of each upload."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.failing = False
        self.failed_parts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                query = parse_qs(urlsplit(self.path).query)
                part = int(query.get("partNumber", ["0"])[0])
                if proxy.failing and self.command == "PUT" and part >= 2:
                    proxy.failed_parts += 1
                    payload = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
                headers["host"] = target.netloc
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3_proxy(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingS3Proxy]:
    proxy = FailingS3Proxy(s3_endpoint.url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLAKY_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1"},
            }
        ),
    )
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.slow
def test_s3_failing_mid_upload_publishes_nothing_and_a_rerun_succeeds(
    emulator: Emulator,
    s3_endpoint: S3Endpoint,
    s3_proxy: FailingS3Proxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection(emulator))
    emulator.admin.set_config(processing_seconds=0)
    long_text = "Please answer this question at some length, with care and detail: " * 5
    batch = AnthropicHook().create_batch(
        [ask(f"r{i}", f"{long_text} {i}", max_tokens=200) for i in range(REQUESTS)]
    )
    bucket = s3_endpoint.new_bucket()
    prefix = "claude/run/"

    def transfer() -> dict[str, Any]:
        operator = AnthropicBatchResultsToObjectStorageOperator(
            task_id="results",
            batch_id=batch.id,
            destination=f"s3://{bucket}/{prefix}",
            dest_conn_id="flaky_s3",
            download_retry_delay=0,
        )
        return dict(operator.execute(task_context()))

    s3_proxy.failing = True
    with pytest.raises(OSError, match=r"(?i)503|unavailable|injected") as raised:  # s3fs: OSError
        transfer()
    assert s3_proxy.failed_parts >= 1, "the upload never reached a second part"
    assert s3_endpoint.keys(bucket) == [], s3_endpoint.keys(bucket)  # nothing final, nothing staged
    assert s3_endpoint.open_uploads(bucket) == []  # the multipart upload was aborted, not completed
    FIGURES["faults_injected"]["s3_upload_part_503"] += s3_proxy.failed_parts

    s3_proxy.failing = False
    manifest = transfer()
    assert manifest["results"] == REQUESTS
    name = f"{batch.id}.jsonl"
    assert s3_endpoint.keys(bucket) == [f"{prefix}_manifest.json", f"{prefix}{name}"]
    body = s3_endpoint.read(bucket, f"{prefix}{name}")
    assert len(body) > 8 * 1024 * 1024
    assert body.count(b"\n") == REQUESTS
    assert s3_endpoint.open_uploads(bucket) == []
    manifest_bytes = s3_endpoint.read(bucket, f"{prefix}_manifest.json")
    (tmp_path / "manifest.json").write_bytes(manifest_bytes)
    assert_no_secret(tmp_path, texts={"error": str(raised.value)})
