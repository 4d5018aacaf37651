"""Test-wide set-up: an isolated AIRFLOW_HOME before anything imports Airflow, and a loopback S3.

The S3 endpoint is moto's real HTTP server on 127.0.0.1, reached through the Amazon provider's
object storage (an ``aws`` connection from an ``AIRFLOW_CONN_...`` variable), as a user's DAG would.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-provider-batches-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

import boto3
from moto.server import ThreadedMotoServer

from airflow_provider_batches.emulator import Emulator
from tests.airflow_harness import AirflowEnv
from tests.operators.support import running_emulator

#: The ``aws`` connection that points the Amazon provider at the moto server.
S3_CONN_ID = "results_s3"


def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``airflow db migrate`` per test run: pytest-xdist's workers share its basetemp's parent, and
    the first worker there migrates while the others wait on the lock, then copy the file."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    template = AirflowEnv(shared / "airflow-migrated")
    with (shared / "airflow-migrated.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template.home / "migrated").exists():
            template.migrate()
            (template.home / "migrated").touch()
    return template.db_path


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowEnv]:
    """A migrated SQLite metadata DB for ``airflow dags test`` runs, shared by the session (each
    pytest-xdist worker has its own copy of one migration)."""
    env = AirflowEnv(Path(tmp_path_factory.mktemp("airflow-home")))
    shutil.copy(migrated_db(tmp_path_factory), env.db_path)
    try:
        yield env
    finally:
        env.close()


class S3Endpoint:
    """moto's S3 server on loopback, with a boto3 client to look behind object storage's back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self) -> str:
        name = f"results-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def open_uploads(self, bucket: str) -> list[str]:
        return [
            upload["Key"] for upload in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        ]

    def put(self, bucket: str, key: str, body: bytes) -> str:
        """Store ``body`` and return its ``s3://`` URI."""
        self.client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def bucket_names(self) -> list[str]:
        return sorted(bucket["Name"] for bucket in self.client.list_buckets()["Buckets"])

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """One moto server for the session; ``AIRFLOW_CONN_RESULTS_S3`` points the Amazon provider at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env_var = f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"
    os.environ[env_var] = json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": url, "region_name": "us-east-1"},
        }
    )
    try:
        yield S3Endpoint(url)
    finally:
        os.environ.pop(env_var, None)
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> str:
    return s3_endpoint.new_bucket()


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A running emulator (instant lifecycle) with ``anthropic_default`` pointing at it; suites that
    need another shape (reliability, example DAGs, coalesced waiting) define their own."""
    with running_emulator(monkeypatch) as emu:
        yield emu
