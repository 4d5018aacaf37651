"""The measured variants. Each runs alone in a fresh interpreter (see :mod:`bench.measure`) and
imports only what it uses, so its peak RSS is its own. The Airflow connection comes from
``AIRFLOW_CONN_ANTHROPIC_DEFAULT`` (set by the caller), which both providers read.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.measure import Timer, child_main

API_HEADERS = {"x-api-key": "sk-ant-emulator-key", "anthropic-version": "2023-06-01"}
CHUNK = 1 << 20


def _base_url() -> str:
    return str(json.loads(os.environ["AIRFLOW_CONN_ANTHROPIC_DEFAULT"])["host"])


def _result(timer: Timer, **extra: Any) -> dict[str, Any]:
    return {"wall": timer.wall, "cpu": timer.cpu, **extra}


# -- memory floor -----------------------------------------------------------------------------------


def import_airflow() -> dict[str, Any]:
    """A bare ``import airflow`` process: the memory floor of any Airflow task process."""
    timer = Timer()
    with timer.measure():
        import airflow  # noqa: F401
    return _result(timer)


# -- 1. results export ------------------------------------------------------------------------------


def results_raw_copy(results_urls: list[str], out_dir: str) -> dict[str, Any]:
    """The floor: httpx streams each results URL's bytes into a local file, one after another, nothing
    else."""
    timer = Timer()
    targets = [Path(out_dir) / f"raw-{index}.jsonl" for index in range(len(results_urls))]
    with timer.measure():
        for results_url, target in zip(results_urls, targets, strict=True):
            _download(results_url, target)
    return _result(timer, bytes=sum(target.stat().st_size for target in targets))


def _download(results_url: str, target: Path) -> None:
    import httpx

    with (
        httpx.Client(headers=API_HEADERS, timeout=600) as client,
        client.stream("GET", results_url) as response,
        target.open("wb") as out,
    ):
        response.raise_for_status()
        for chunk in response.iter_raw(CHUNK):
            out.write(chunk)


def results_ours(batch_id: str | list[str], out_dir: str, **options: Any) -> dict[str, Any]:
    """AnthropicBatchResultsToObjectStorageOperator.execute to a file:// destination (``options``: e.g.
    ``output_format="parquet"``)."""
    from airflow_provider_batches.transfers.results_to_object_storage import (
        AnthropicBatchResultsToObjectStorageOperator,
    )

    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="export", batch_id=batch_id, destination=f"file://{out_dir}/ours/", overwrite=True, **options
    )
    timer = Timer()
    with timer.measure():
        manifest = operator.execute({})  # type: ignore[arg-type]  # no outlets: the context is not read
    return _result(timer, bytes=manifest["bytes"], results=manifest["results"], counts=manifest["counts"])


def results_pyarrow_plain(results_url: str, out_dir: str) -> dict[str, Any]:
    """The Parquet floor: download the lines to a file, then ``pyarrow.json.read_json`` + ``write_table``
    (schema inferred, the whole table in memory, no verification)."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    timer = Timer()
    lines = Path(out_dir) / "plain.jsonl"
    target = Path(out_dir) / "plain.parquet"
    with timer.measure():
        _download(results_url, lines)
        table = pj.read_json(lines)
        pq.write_table(table, target, compression="zstd")
    return _result(timer, bytes=target.stat().st_size, results=table.num_rows)


def results_vendor(batch_id: str, out_dir: str) -> dict[str, Any]:
    """The vendor provider: its hook's ``stream_batch_results``, each result written as a JSON line."""
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    timer = Timer()
    target = Path(out_dir) / "vendor.jsonl"
    results = 0
    hook = AnthropicHook()  # held: a dropped hook's client closes the stream under the loop
    with timer.measure(), target.open("wb") as out:
        for result in hook.stream_batch_results(batch_id):
            out.write(result.model_dump_json().encode() + b"\n")
            results += 1
    return _result(timer, bytes=target.stat().st_size, results=results)


# -- 2. batch creation ------------------------------------------------------------------------------


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


def create_raw_upload(body_path: str) -> dict[str, Any]:
    """The floor: httpx streams the finished request body from disk (no validation, no encoding)."""
    import httpx

    timer = Timer()
    with timer.measure(), httpx.Client(headers=API_HEADERS, timeout=600) as client:
        response = client.post(
            f"{_base_url()}/v1/messages/batches",
            content=_file_chunks(Path(body_path)),
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
    return _result(timer, batches=1, requests=response.json()["request_counts"]["processing"])


def create_raw_batches(body_paths: list[str]) -> dict[str, Any]:
    """The floor of a many-batch job: httpx streams each finished body from disk, one after another."""
    import httpx

    timer = Timer()
    requests = 0
    with timer.measure(), httpx.Client(headers=API_HEADERS, timeout=600) as client:
        for body_path in body_paths:
            response = client.post(
                f"{_base_url()}/v1/messages/batches",
                content=_file_chunks(Path(body_path)),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            requests += response.json()["request_counts"]["processing"]
    return _result(timer, batches=len(body_paths), requests=requests)


class _TaskStateStore:
    """``context["task_state_store"]``: the job record kept in memory, as JSON (what Airflow stores)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = json.dumps(value)


class _TaskInstance:
    max_tries = 0

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def create_operator(requests_path: str) -> dict[str, Any]:
    """The create operator's real ``execute()``: validation, job record, re-attach check, each batch's
    create with intent and watermark, then the manifest (no waiting: the batches stay in progress)."""
    from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator

    operator = AnthropicCreateBatchOperator(
        task_id="create", requests_path=requests_path, wait_for_completion=False, deferrable=False
    )
    context = {"ti": _TaskInstance(), "task_state_store": _TaskStateStore()}
    timer = Timer()
    with timer.measure():
        manifest = operator.execute(context)  # type: ignore[arg-type]
    operator.hook.close()
    return _result(timer, batches=len(manifest["batch_ids"]), requests=manifest["request_count"])


def create_vendor(requests_path: str) -> dict[str, Any]:
    """The vendor provider: the request list loaded from the file, then ``create_batch``."""
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    timer = Timer()
    with timer.measure():
        with open(requests_path, "rb") as source:
            requests = [json.loads(line) for line in source if line.strip()]
        batch = AnthropicHook().create_batch(requests)
    return _result(timer, batches=1, requests=batch.request_counts.processing)


# -- 3. waiting -------------------------------------------------------------------------------------


async def _drive_until_ended(
    triggers: list[Any], end_after: float, max_wait: float, base_url: str
) -> dict[str, Any]:
    """Run every trigger's ``run()`` concurrently; after ``end_after`` s end every batch at once (the
    emulator's clock jumps a day) and wait up to ``max_wait`` s for the events.

    Returns the latency of each event after the end, the statuses, and the CPU spent while merely
    waiting (from 5 s after the start, past the start-up, to the end)."""
    import httpx

    fired: list[float] = []
    statuses: dict[str, int] = {}

    async def consume(trigger: Any) -> None:
        async for event in trigger.run():
            fired.append(time.time())
            status = str(getattr(event, "payload", {}).get("status"))
            statuses[status] = statuses.get(status, 0) + 1

    tasks = [asyncio.create_task(consume(trigger)) for trigger in triggers]
    settle = min(5.0, end_after / 2)
    await asyncio.sleep(settle)
    cpu_start = time.process_time()
    await asyncio.sleep(end_after - settle)
    waiting_cpu = time.process_time() - cpu_start
    early = len(fired)
    jumped_at = time.time()
    async with httpx.AsyncClient(timeout=600) as client:
        # The clock jumps and the emulator ends every batch at once (an admin call: not counted), as
        # the real API ends batches on its own; latency runs from when they have all ended.
        answer = await client.post(
            f"{base_url}/_emulator/clock", json={"advance_seconds": 2 * 86400, "settle": True}
        )
        answer.raise_for_status()
    ended_at = time.time()
    deadline = ended_at + max_wait
    while len(fired) < len(triggers) and time.time() < deadline:
        await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    crashed = sum(1 for result in results if isinstance(result, Exception))
    return {
        "latencies": sorted(f - ended_at for f in fired[early:]),
        "early_events": early,
        "statuses": statuses,
        "crashed": crashed,
        "waiting_cpu": waiting_cpu,
        "waiting_seconds": end_after - settle,
        "settle_seconds": ended_at - jumped_at,
        "settled": answer.json().get("ended", 0),
    }


def wait_ours(
    batch_ids_path: str, end_after: float, max_wait: float, interval: float, max_interval: float
) -> dict[str, Any]:
    """``AnthropicBatchTrigger`` per batch (all of one connection: they share its poller)."""
    from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger

    batch_ids: list[str] = json.loads(Path(batch_ids_path).read_text())

    triggers = [
        AnthropicBatchTrigger(
            batch_ids=[batch_id],
            deadline=time.time() + 24 * 3600,
            poll_interval=interval,
            max_poll_interval=max_interval,
        )
        for batch_id in batch_ids
    ]
    timer = Timer()
    with timer.measure():
        outcome = asyncio.run(_drive_until_ended(triggers, end_after, max_wait, _base_url()))
    return _result(timer, **outcome)


def wait_vendor(
    batch_ids_path: str, end_after: float, max_wait: float, interval: float, max_interval: float
) -> dict[str, Any]:
    """The vendor's ``AnthropicBatchTrigger`` per batch (the sync SDK in threads, no back-off)."""
    from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

    batch_ids: list[str] = json.loads(Path(batch_ids_path).read_text())

    triggers = [
        AnthropicBatchTrigger(
            conn_id="anthropic_default",
            batch_id=batch_id,
            poll_interval=interval,
            end_time=time.time() + 24 * 3600,
        )
        for batch_id in batch_ids
    ]
    timer = Timer()
    with timer.measure():
        outcome = asyncio.run(_drive_until_ended(triggers, end_after, max_wait, _base_url()))
    return _result(timer, **outcome)


# -- 4. token counting ------------------------------------------------------------------------------


def count_ours(requests_path: str) -> dict[str, Any]:
    """``AnthropicCountTokensOperator(requests_path=...).execute``."""
    from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator

    operator = AnthropicCountTokensOperator(task_id="count", requests_path=requests_path)
    timer = Timer()
    with timer.measure():
        summary = operator.execute({})  # type: ignore[arg-type]
    return _result(timer, requests=summary["request_count"], input_tokens=summary["input_tokens"])


def count_vendor(requests_path: str) -> dict[str, Any]:
    """The vendor hook's ``count_tokens`` for each request in turn (it has no counting operator)."""
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    hook = AnthropicHook()
    counted = tokens = failures = 0
    timer = Timer()
    with timer.measure(), open(requests_path, "rb") as source:
        for line in source:
            params = json.loads(line)["params"]
            try:
                tokens += hook.count_tokens(
                    params["messages"], model=params["model"], system=params.get("system")
                )
                counted += 1
            except Exception:
                failures += 1
    return _result(timer, requests=counted, input_tokens=tokens, failures=failures)


VARIANTS = {
    name: function
    for name, function in globals().items()
    if callable(function)
    and getattr(function, "__module__", None) == __name__
    and not name.startswith("_")
    and name not in ("child_main",)
}

if __name__ == "__main__":
    child_main(VARIANTS)
