"""Benchmark: the emulator takes a ~250 MB, 100,000-request create body and streams ~250 MB of results
in bounded memory. Prints the emulator process's peak RSS and the throughput of each phase.

    PYTHONPATH=. python bench/bench_emulator.py [--requests 100000] [--prompt-bytes 2400]

Data is generated on the fly (nothing is written by this script except the emulator's own spool files,
in a temporary directory removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import httpx
import psutil

API_KEY = "sk-ant-emulator-key"
HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
MB = 1024 * 1024


class PeakRss:
    """Samples a process's resident memory every 20 ms and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def create_body(requests: int, prompt_bytes: int) -> Iterator[bytes]:
    """The create-batch body, streamed in pieces: never held whole by the client either."""
    yield b'{"requests": ['
    for index in range(requests):
        prompt = (f"request {index} " + "lorem ipsum " * (prompt_bytes // 12))[:prompt_bytes]
        item = {
            "custom_id": f"req-{index}",
            "params": {
                "model": "claude-bench",
                "max_tokens": 4096,
                "messages": [{"role": "user", "content": prompt}],
            },
        }
        yield (b"," if index else b"") + json.dumps(item).encode()
    yield b"]}"


def start_emulator(data_dir: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "airflow_provider_batches.emulator", "--port", "0"]
    command += ["--processing-seconds", "0", "--data-dir", data_dir]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().split()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--prompt-bytes", type=int, default=2400)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as data_dir:
        process, base_url = start_emulator(data_dir)
        try:
            idle_rss = psutil.Process(process.pid).memory_info().rss
            with (
                httpx.Client(base_url=base_url, headers=HEADERS, timeout=600) as client,
                PeakRss(process.pid) as rss,
            ):
                started = time.monotonic()
                sent = 0

                def counted() -> Iterator[bytes]:
                    nonlocal sent
                    for piece in create_body(args.requests, args.prompt_bytes):
                        sent += len(piece)
                        yield piece

                created = client.post("/v1/messages/batches", content=counted())
                created.raise_for_status()
                upload_seconds = time.monotonic() - started
                batch = created.json()
                create_peak = rss.peak

                started = time.monotonic()
                ended = client.get(f"/v1/messages/batches/{batch['id']}").json()
                received = 0
                lines = 0
                with client.stream("GET", ended["results_url"]) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes(1 << 20):
                        received += len(chunk)
                        lines += chunk.count(b"\n")
                results_seconds = time.monotonic() - started
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"requests:            {args.requests:,} ({ended['request_counts']['succeeded']:,} succeeded)")
    print(
        f"create body:         {sent / MB:,.1f} MB in {upload_seconds:.1f} s "
        f"= {sent / MB / upload_seconds:,.1f} MB/s"
    )
    print(
        f"results (write+get): {received / MB:,.1f} MB, {lines:,} lines in {results_seconds:.1f} s "
        f"= {received / MB / results_seconds:,.1f} MB/s"
    )
    print(
        f"emulator RSS:        idle {idle_rss / MB:,.0f} MB, peak during create {create_peak / MB:,.0f} MB, "
        f"peak overall {rss.peak / MB:,.0f} MB"
    )


if __name__ == "__main__":
    main()
