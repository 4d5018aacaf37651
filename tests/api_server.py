"""A real Airflow API server (``airflow api-server``) on a free loopback port, for ``make ui`` and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from tests.airflow_harness import BIN, AirflowEnv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def api_server(
    airflow: AirflowEnv, log_path: Path, *, port: int | None = None, timeout: float = 120, **env: str
) -> Iterator[str]:
    """Start the API server (plugins included), wait until it answers, yield its base URL; stop it after."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=airflow.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the API server exited ({process.returncode}); see {log_path}")
                try:
                    if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the API server did not answer within {timeout:.0f} s; see {log_path}"
                    )
                time.sleep(0.5)
            yield url
        finally:  # the server and its workers: the process group it leads
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
