"""moto's S3 server as a separate process for the benchmarks: the S3 destination of the export rows.

Its own process (``python -m moto.server`` on 127.0.0.1), so a variant's ``getrusage`` holds only the
client's CPU; moto's is read apart (psutil), like the emulator's. It runs on the same cores.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from types import TracebackType
from typing import Any

import httpx
import psutil

from bench.emulator import stop

#: The S3 variants' Airflow connection (``AIRFLOW_CONN_AWS_DEFAULT``): the Amazon provider's default.
AWS_CONN_ID = "aws_default"
_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoProcess:
    """``python -m moto.server -H 127.0.0.1 -p <free port>``, a bucket in it, a boto3 client for set-up."""

    def __init__(self) -> None:
        self.url = ""
        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None
        self.psutil: psutil.Process | None = None
        self.client: Any = None

    def __enter__(self) -> MotoProcess:
        import boto3

        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile(prefix="bench-moto-", suffix=".log")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log,
            stderr=self._log,
        )
        self.psutil = psutil.Process(self._process.pid)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        self.client = boto3.client("s3", endpoint_url=self.url, **_KEYS)
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            stop(self._process)
        self._log.close()

    @property
    def connection_json(self) -> str:
        """``AIRFLOW_CONN_AWS_DEFAULT`` reaching this server (dummy keys, the endpoint in extra)."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": _KEYS["aws_access_key_id"],
                "password": _KEYS["aws_secret_access_key"],
                "extra": {"endpoint_url": self.url, "region_name": _KEYS["region_name"]},
            }
        )

    def cpu_seconds(self) -> float:
        assert self.psutil is not None
        times = self.psutil.cpu_times()
        return float(times.user + times.system)

    def prefix_bytes(self, prefix: str) -> int:
        """Bytes stored under ``prefix`` (a run's output, checked before it is deleted)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sum(item["Size"] for page in pages for item in page.get("Contents", []))

    def delete_prefix(self, prefix: str) -> None:
        """Remove a run's objects and any upload it left open (set-up, not measured)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
