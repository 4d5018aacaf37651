"""The CLI prints one line with its URL once it serves, and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from tests.emulator.helpers import VERSION_HEADERS


def test_cli_with_port_zero_prints_its_url_and_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_batches.emulator", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Anthropic emulator listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        assert not base_url.endswith(":0")
        response = httpx.get(
            f"{base_url}/v1/messages/batches", headers={"x-api-key": "sk-ant-emulator-key", **VERSION_HEADERS}
        )
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert process.stdout.read() == ""
