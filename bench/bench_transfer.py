"""Benchmark: the results transfer operator against a raw byte copy of the same results stream.

    PYTHONPATH=. python bench/bench_transfer.py [--requests 100000] [--line-bytes 2500] [--repeat 3]

A results file (100,000 lines of ~2.5 KB, ~250 MB) is generated once in a temporary directory and
served over httpx.MockTransport straight from disk, so the API side costs nearly nothing and the
comparison isolates the client: "raw copy" streams the bytes to a file:// destination through the
hook, "operator" runs AnthropicBatchResultsToObjectStorageOperator (line splitting, JSON parse of
each line, custom_id digests, per-type counts, sha256, staging and publish). Prints wall time,
throughput, the ratio to the raw copy (target: within 1.5x) and the operator's Python memory peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx

RESULTS_PATH = "/v1/messages/batches/msgbatch_bench/results"
BASE_URL = "http://api.bench"
MB = 1_000_000


def write_results(path: Path, requests: int, line_bytes: int) -> int:
    """A results file with a mix of result types; returns how many succeeded (the rest errored)."""
    succeeded = 0
    with path.open("wb") as out:
        for index in range(requests):
            if index % 50 == 49:
                result: dict[str, Any] = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                }
            else:
                succeeded += 1
                result = {
                    "type": "succeeded",
                    "message": {
                        "id": f"msg_{index:08d}",
                        "type": "message",
                        "role": "assistant",
                        "model": "claude-bench",
                        "content": [{"type": "text", "text": ""}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 600, "output_tokens": 500, "service_tier": "batch"},
                    },
                }
            line = {"custom_id": f"req-{index}", "result": result}
            size = len(json.dumps(line))
            if result["type"] == "succeeded":
                result["message"]["content"][0]["text"] = "lorem ipsum " * max(0, (line_bytes - size) // 12)
            out.write(json.dumps(line).encode() + b"\n")
    return succeeded


class FileStream(httpx.SyncByteStream):
    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk


def batch_json(requests: int, succeeded: int) -> dict[str, Any]:
    return {
        "id": "msgbatch_bench",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": succeeded,
            "errored": requests - succeeded,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": "2026-11-22T10:00:00Z",
        "ended_at": "2026-11-22T11:00:00Z",
        "results_url": BASE_URL + RESULTS_PATH,
    }


def transport(results: Path, batch: dict[str, Any]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == RESULTS_PATH:
            return httpx.Response(200, stream=FileStream(results))
        return httpx.Response(200, json=batch)

    return httpx.MockTransport(answer)


def raw_copy(mock: httpx.MockTransport, out_dir: Path) -> float:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_batches.hooks.anthropic import AnthropicHook

    hook = AnthropicHook(transport=mock)
    destination = ObjectStoragePath(f"file://{out_dir}/raw/")
    destination.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fs: Any = destination.fs
    with fs.open((destination / "msgbatch_bench.jsonl").path, "wb") as out:
        for chunk in hook.iter_results_bytes("msgbatch_bench", chunk_size=1 << 20):
            out.write(chunk)
    hook.close()
    return time.perf_counter() - started


def operator_copy(mock: httpx.MockTransport, out_dir: Path, *, trace: bool = False) -> tuple[float, int]:
    from airflow.sdk import Context

    from airflow_provider_batches.hooks.anthropic import AnthropicHook
    from airflow_provider_batches.transfers.results_to_object_storage import (
        AnthropicBatchResultsToObjectStorageOperator,
    )

    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="bench", batch_id="msgbatch_bench", destination=f"file://{out_dir}/operator/", overwrite=True
    )
    operator.hook = AnthropicHook(transport=mock)
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    operator.execute(cast(Context, {}))
    elapsed = time.perf_counter() - started
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--line-bytes", type=int, default=2500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
        json.dumps({"conn_type": "anthropic_batches", "host": BASE_URL, "password": "sk-bench"}),
    )
    work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    try:
        results = work / "results.jsonl"
        succeeded = write_results(results, args.requests, args.line_bytes)
        size = results.stat().st_size
        mock = transport(results, batch_json(args.requests, succeeded))
        print(f"results: {args.requests:,} lines, {size / MB:,.0f} MB")

        raw_times, operator_times = [], []
        for _ in range(args.repeat):
            raw_times.append(raw_copy(mock, work))
            operator_times.append(operator_copy(mock, work)[0])
        _, peak = operator_copy(mock, work, trace=True)

        raw, ours = statistics.median(raw_times), statistics.median(operator_times)
        print(f"{'':12} {'median s':>9} {'MB/s':>8}")
        print(f"{'raw copy':12} {raw:9.2f} {size / MB / raw:8.0f}")
        print(f"{'operator':12} {ours:9.2f} {size / MB / ours:8.0f}")
        print(f"ratio operator / raw copy: {ours / raw:.2f}x (target <= 1.5x)")
        print(f"operator Python memory peak (tracemalloc): {peak / MB:.1f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
