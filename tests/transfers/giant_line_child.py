"""Run by test_giant_result_lines.py in its own process: one results transfer of a batch whose first
line is ``sys.argv[1]`` bytes, its peak RSS growth measured with ``resource.getrusage``.

A first, small transfer warms imports and caches, so the growth is the giant line's alone. Prints one
JSON object: outcome, growth_mb, seconds.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

from airflow_provider_batches.emulator.server import AdminClient
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)


def request(index: int) -> dict[str, Any]:
    params = {
        "model": "claude-emulator-test",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return {"custom_id": f"r{index}", "params": params}


def transfer(batch_id: str, destination: str, **kwargs: Any) -> dict[str, Any]:
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=batch_id, destination=destination, download_retries=0, **kwargs
    )
    result: dict[str, Any] = operator.execute({})  # type: ignore[arg-type]
    return result


def main(size: int, destination: str, options: dict[str, Any]) -> None:
    hook = AnthropicHook()
    warm, giant = (hook.create_batch([request(i) for i in range(3)]) for _ in range(2))
    transfer(warm.id, f"{destination}/warm/", **options)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    AdminClient(hook.get_settings().base_url).set_config(giant_result_bytes=size)
    started = time.monotonic()
    try:
        manifest = transfer(giant.id, f"{destination}/giant/", **options)
        outcome = f"exported {manifest['bytes']} bytes"
    except Exception as exc:
        outcome = f"refused: {type(exc).__name__}: {exc}"
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"outcome": outcome, "growth_mb": growth, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]))
