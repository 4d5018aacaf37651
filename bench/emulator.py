"""The emulator as a separate process for the benchmarks: started by the CLI, driven over HTTP."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

API_KEY = "sk-ant-emulator-key"
API_HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
#: A batch created for a waiting run ends at least this long after its create.
MIN_PROCESSING_SECONDS = 5.0


class EmulatorProcess:
    """``python -m airflow_provider_batches.emulator --port 0 <flags>`` with its own data directory."""

    def __init__(self, *flags: str) -> None:
        self.flags: Sequence[str] = flags
        self.base_url = ""
        self._data_dir = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
        self._process: subprocess.Popen[str] | None = None
        self.psutil: psutil.Process | None = None

    def __enter__(self) -> EmulatorProcess:
        command = [sys.executable, "-m", "airflow_provider_batches.emulator", "--port", "0"]
        command += ["--data-dir", str(self._data_dir), *self.flags]
        self._log = tempfile.TemporaryFile(prefix="bench-emulator-", suffix=".log")
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator did not start: {command}")
        self.base_url = line.split()[-1]
        self.psutil = psutil.Process(self._process.pid)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            stop(self._process)
        shutil.rmtree(self._data_dir, ignore_errors=True)
        self._log.close()

    @property
    def connection_json(self) -> str:
        """``AIRFLOW_CONN_ANTHROPIC_DEFAULT`` reaching this emulator (both providers read it)."""
        import json

        return json.dumps({"conn_type": "anthropic", "host": self.base_url, "password": API_KEY})

    def cpu_seconds(self) -> float:
        assert self.psutil is not None
        times = self.psutil.cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        assert self.psutil is not None
        return int(self.psutil.memory_info().rss)

    def check_alive(self) -> None:
        """Raise with the emulator's exit status and last log lines if it is no longer running."""
        assert self._process is not None
        if self._process.poll() is not None:
            self._log.seek(0)
            tail = "\n".join(self._log.read().decode(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the emulator exited with status {self._process.returncode}:\n{tail}")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.check_alive()
        response = httpx.request(method, f"{self.base_url}/_emulator/{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def reset(self, *, batches: bool = False) -> None:
        self.admin("POST", "reset" + ("?batches=true" if batches else ""))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "stats")
        return result

    def client(self, timeout: float = 600) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=API_HEADERS, timeout=timeout)

    def create_batch_from_body(self, body: Path) -> dict[str, Any]:
        with self.client() as client:
            response = client.post(
                "/v1/messages/batches",
                content=_file_chunks(body),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            created: dict[str, Any] = response.json()
            return created

    def create_batches_ending(self, ends: Sequence[float], *, seed: int = 25) -> dict[str, float]:
        """One one-request batch per entry of ``ends`` (epoch seconds), each ending on its own timer at
        about that moment: no clock jump, so rate-limit windows and per-minute counts stay real.

        Ends are grouped by half second, one ``processing_seconds`` change per group, and the groups
        are created in random order, so a batch's place in the listing says nothing of its end. When
        creating runs late, the groups still to create end that much later than planned. Each id maps
        to its exact end (its ``created_at`` plus its ``processing_seconds``)."""
        groups: dict[float, int] = {}
        for end in ends:
            groups[math.floor(end * 2) / 2] = groups.get(math.floor(end * 2) / 2, 0) + 1
        order = sorted(groups)
        random.Random(seed).shuffle(order)
        request = {
            "custom_id": "poll-0",
            "params": {
                "model": "claude-sonnet-4-6",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "ping"}],
            },
        }
        created: dict[str, float] = {}
        late = 0.0  # creating slower than planned (a loaded machine): later groups end that much later
        with self.client() as client:
            for end in order:
                processing = end + late - time.time()
                if processing < MIN_PROCESSING_SECONDS:
                    late += MIN_PROCESSING_SECONDS - processing
                    processing = MIN_PROCESSING_SECONDS
                client.patch("/_emulator/config", json={"processing_seconds": processing}).raise_for_status()
                for _ in range(groups[end]):
                    response = client.post("/v1/messages/batches", json={"requests": [request]})
                    response.raise_for_status()
                    batch = response.json()
                    at = datetime.fromisoformat(batch["created_at"].replace("Z", "+00:00")).timestamp()
                    created[batch["id"]] = at + processing
        return created

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/v1/messages/batches/{batch_id}")
            response.raise_for_status()
            batch: dict[str, Any] = response.json()
            return batch

    def download(self, url: str) -> int:
        """Fetch a results URL and drop the bytes (writes the results file, warms the page cache)."""
        size = 0
        with self.client() as client, client.stream("GET", url) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                size += len(chunk)
        return size


def stop(process: subprocess.Popen[Any]) -> None:
    """End a server process this bench started: SIGTERM, then SIGKILL if it has not exited in 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk
