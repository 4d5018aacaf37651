"""A seeded fault series that tries to make jobs pay twice or publish another job's results.

Sixteen jobs run one after another against one API key, every job the same size (so a lost create
could be taken for another job's batch), some split into batches of the same size as other jobs'
whole batches. The emulator injects 429/500/529, drops before the server acts, loses answers after
it acted (the batch exists, the client never hears), and cuts results streams. Each task is retried
as Airflow would (same durable record, new try). Every job must end with exactly its own batches,
and its published output must hold exactly its own custom_ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import AnthropicBatchesError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.operators.support import FakeTaskStateStore, task_context
from tests.reliability.conftest import (
    FIGURES,
    ask,
    batches_created,
    connection,
    record_faults,
    start_emulator,
)

JOBS = 16
REQUESTS_PER_JOB = 40
MAX_TRIES = 10


@pytest.fixture
def lossy_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The reliability suite's seeded faults, denser: about one call in four meets a fault."""
    emu = start_emulator(
        faults=True,
        seed=11,
        processing_seconds=0,
        overloaded_fraction=0.05,
        api_error_fraction=0.05,
        drop_fraction=0.03,
        drop_after_fraction=0.05,
        cut_results_fraction=0.35,
    )
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection(emu))
    try:
        yield emu
    finally:
        emu.stop()


def with_retries(task: Callable[[], dict[str, Any]], failures: list[str]) -> dict[str, Any]:
    """Run ``task`` as Airflow runs a task with retries: a failed try is followed by another."""
    for _ in range(MAX_TRIES):
        try:
            return task()
        except (AnthropicBatchesError, OSError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
    raise AssertionError(f"still failing after {MAX_TRIES} tries: {failures[-3:]}")


def run_job(index: int, out: Path, failures: list[str]) -> tuple[set[str], dict[str, Any], dict[str, Any]]:
    prefix = f"job{index}"
    own_ids = {f"{prefix}-{number}" for number in range(REQUESTS_PER_JOB)}
    requests = [ask(custom_id) for custom_id in sorted(own_ids)]
    split = {"max_requests_per_batch": REQUESTS_PER_JOB // 2} if index % 3 == 0 else {}
    store = FakeTaskStateStore()

    def create() -> dict[str, Any]:
        operator = AnthropicCreateBatchOperator(
            task_id=f"create_{prefix}", requests=requests, deferrable=False, poll_interval=0.05, **split
        )
        result: dict[str, Any] = operator.execute(task_context(store))
        return result

    created = with_retries(create, failures)

    def export() -> dict[str, Any]:
        operator = AnthropicBatchResultsToObjectStorageOperator(
            task_id=f"results_{prefix}",
            batch_id=created,
            destination=f"file://{out / prefix}/",
            download_retry_delay=0,
        )
        result: dict[str, Any] = operator.execute(cast(Context, {}))
        return result

    return own_ids, created, with_retries(export, failures)


def published_custom_ids(destination: Path) -> list[str]:
    return [
        json.loads(line)["custom_id"]
        for path in sorted(destination.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_a_seeded_fault_series_never_pays_twice_nor_publishes_another_jobs_results(
    lossy_emulator: Emulator, tmp_path: Path
) -> None:
    failures: list[str] = []
    owner_of_batch: dict[str, int] = {}
    slices = 0
    for index in range(JOBS):
        own_ids, created, published = run_job(index, tmp_path / "out", failures)
        for batch_id in created["batch_ids"]:
            assert batch_id not in owner_of_batch, (
                f"job {index} owns job {owner_of_batch.get(batch_id)}'s batch"
            )
            owner_of_batch[batch_id] = index
        slices += len(created["batch_ids"])
        ids = published_custom_ids(tmp_path / "out" / f"job{index}")
        assert sorted(ids) == sorted(own_ids), f"job {index} published other custom_ids"
        assert all(entry["checked"] for entry in published["custom_ids"].values())

    stats = lossy_emulator.admin.stats()
    record_faults(stats)
    faults = stats["faults_injected"]
    # The series must really have met every kind of fault, or it proves nothing.
    for kind in ("429", "500", "529", "drop", "drop_after", "cut"):
        assert faults.get(kind), (kind, faults)
    assert batches_created(lossy_emulator) == slices  # not one paid duplicate
    leftover = [batch.id for batch in AnthropicHook().iter_batches() if batch.id not in owner_of_batch]
    assert leftover == []
    FIGURES["pipeline_runs"] += JOBS
    FIGURES["series_jobs"] = JOBS
    FIGURES["series_batches"] = slices
    FIGURES["series_outputs_verified_against_own_input"] = JOBS
    FIGURES["task_retries_after_faults"] = FIGURES.get("task_retries_after_faults", 0) + len(failures)
