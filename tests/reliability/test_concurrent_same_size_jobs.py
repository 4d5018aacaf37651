"""Concurrent same-size jobs on one API key, with creates lost before and after the server acted.

A platform runs many DAGs from one template on one key: every job has the same custom_ids and the
same batch size, and they create at the same moments. Rounds of jobs run at once (threads, each
driving the real create operator as a worker would: a fresh operator per try and per resume; half
of them deferred, their triggers run for real; a third re-drive two transient failures as a
follow-up round, itself the same size in every such job; a third submit in queue waves with
``max_requests_in_flight``), while the emulator loses a share of the creates:
half dropped before the server acts (no batch), half after it made the batch (the answer lost).
Every job must publish exactly its own answers, the emulator must have made exactly the batches the
jobs need, and no job may adopt, wait on as its own, or cancel another job's batch.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Context

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import FakeTaskStateStore, TaskDeferred, task_context
from tests.reliability.conftest import FIGURES, ask, batches_created, connection, start_emulator
from tests.reliability.test_retry_safety_series import with_retries

JOBS_PER_ROUND = 10
ROUNDS = 3
REQUESTS_PER_JOB = 20
PER_BATCH = 10  # every job: two batches of 10 (and their proof requests), like every other job's
CREATE_ROUTE = "POST /v1/messages/batches"


#: Every fifth create is lost, alternately before the server acts and after it made the batch; the
#: script is as long as the creates the series sends when each lost-before create is sent once more
#: (72 batches + 8), so exactly 16 of 80 creates (20 %) are lost, whatever the threads' order.
CREATE_FAULTS = ["ok", "ok", "ok", "ok", "drop", "ok", "ok", "ok", "ok", "drop_after"] * 8


@pytest.fixture
def lossy_creates(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    # and the reliability suite's ordinary faults on every call: 429, 500, 529, drops, cut downloads
    emu = start_emulator(faults=True, seed=21, processing_seconds=1, create_faults=CREATE_FAULTS)
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection(emu))
    try:
        yield emu
    finally:
        emu.stop()


#: Two requests of a re-driving job fail once (transiently): its round 2 is a batch of 2.
FLAKY = " [emulator:errored_once=overloaded_error]"
REDRIVEN = 2


def template(tag: str, *, flaky: bool = False) -> list[dict[str, Any]]:
    """The shared template: the same custom_ids in every job; only the text names the job."""
    return [
        ask(f"q-{index}", f"{tag} asks {index}{FLAKY if flaky and index < REDRIVEN else ''}")
        for index in range(REQUESTS_PER_JOB)
    ]


#: What each job of a round does besides creating: re-drive, queue waves, or nothing more.
KINDS = ("redrive", "queue", "plain")


def slices_of(kind: str) -> int:
    return REQUESTS_PER_JOB // PER_BATCH + (1 if kind == "redrive" else 0)


async def _first_event(trigger: AnthropicBatchTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


class Triggerer:
    """One event loop in its own thread, running every job's triggers, as one triggerer process does."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, trigger: AnthropicBatchTrigger) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(_first_event(trigger), self.loop).result(timeout=300)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def run_task(
    make: Callable[[], AnthropicCreateBatchOperator], context: dict[str, Any], triggerer: Triggerer
) -> dict[str, Any]:
    """One try, as a worker and a triggerer run it: each deferral's trigger runs, then a fresh operator
    resumes with its event."""
    step: Callable[[], dict[str, Any]] = partial(make().execute, context)
    while True:
        try:
            return step()
        except TaskDeferred as deferred:
            trigger = cast(AnthropicBatchTrigger, deferred.trigger)
            event = triggerer.run(trigger)
            method = getattr(make(), deferred.method_name)
            step = partial(method, context, event=event, **(deferred.kwargs or {}))


def run_job(tag: str, kind: str, deferrable: bool, out: Path, triggerer: Triggerer) -> dict[str, Any]:
    store = FakeTaskStateStore()
    failures: list[str] = []
    extra: dict[str, Any] = {
        "redrive": {"redrive": Redrive(max_rounds=2)},
        "queue": {"max_requests_in_flight": PER_BATCH + 1},  # one batch (and its proof) at a time
        "plain": {},
    }[kind]

    def make() -> AnthropicCreateBatchOperator:
        return AnthropicCreateBatchOperator(
            task_id=f"create_{tag}",
            requests=template(tag, flaky=kind == "redrive"),
            max_requests_per_batch=PER_BATCH,
            deferrable=deferrable,
            poll_interval=0.2,
            max_poll_interval=0.5,
            **extra,
        )

    created = with_retries(lambda: run_task(make, task_context(store), triggerer), failures)

    def export() -> dict[str, Any]:
        operator = AnthropicBatchResultsToObjectStorageOperator(
            task_id=f"results_{tag}", batch_id=created, destination=f"file://{out / tag}/"
        )
        return cast(dict[str, Any], operator.execute(cast(Context, {})))

    published = with_retries(export, failures)
    return {"tag": tag, "kind": kind, "created": created, "published": published, "failures": failures}


def published_lines(destination: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(destination.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_concurrent_same_size_jobs_on_one_key_with_lost_creates_each_publish_exactly_their_own(
    lossy_creates: Emulator, tmp_path: Path
) -> None:
    started = time.monotonic()
    jobs: list[dict[str, Any]] = []
    triggerer = Triggerer()
    try:
        for round_number in range(ROUNDS):
            tags = [f"r{round_number}j{index}" for index in range(JOBS_PER_ROUND)]
            with ThreadPoolExecutor(max_workers=JOBS_PER_ROUND) as pool:
                futures = [
                    pool.submit(run_job, tag, KINDS[index % 3], index % 2 == 1, tmp_path / "out", triggerer)
                    for index, tag in enumerate(tags)
                ]
                jobs += [future.result(timeout=600) for future in futures]  # failed for good: raises
    finally:
        triggerer.stop()

    owner: dict[str, str] = {}
    for job in jobs:
        tag, created = job["tag"], job["created"]
        assert len(created["batch_ids"]) == slices_of(job["kind"]), (tag, created["batch_ids"])
        for batch_id in created["batch_ids"]:
            assert batch_id not in owner, f"{tag} adopted {owner.get(batch_id)}'s batch {batch_id}"
            owner[batch_id] = tag
        lines = published_lines(tmp_path / "out" / tag)
        assert sorted(line["custom_id"] for line in lines) == sorted(
            f"q-{i}" for i in range(REQUESTS_PER_JOB)
        )
        for line in lines:  # each answer echoes its prompt: the job's own, never another job's
            text = line["result"]["message"]["content"][0]["text"]
            assert f"{tag} asks {line['custom_id'][2:]}" in text, (tag, text)
        assert created["request_counts"]["succeeded"] == REQUESTS_PER_JOB
        assert job["published"]["counts"]["succeeded"] == REQUESTS_PER_JOB
        assert len(job["published"]["proof_requests"]) == len(created["batch_ids"])

    slices_needed = sum(slices_of(job["kind"]) for job in jobs)
    stats = lossy_creates.admin.stats()
    faults = Counter(stats["faults_injected"])
    every_batch = list(AnthropicHook().iter_batches())
    canceled = [batch.id for batch in every_batch if batch.cancel_initiated_at is not None]
    create_faults = Counter(stats["faults_by_route"].get(CREATE_ROUTE, {}))
    lost_before, lost_after = create_faults["drop"], create_faults["drop_after"]
    lost = lost_before + lost_after
    creates_sent = sum(stats["calls"].get(CREATE_ROUTE, {}).values()) + lost  # a lost one has no answer

    assert batches_created(lossy_creates) == slices_needed  # 0 paid duplicates
    assert sorted(owner) == sorted(batch.id for batch in every_batch)  # every batch is one job's
    assert canceled == []  # 0 foreign (or own) batches canceled
    assert lost / creates_sent >= 0.15, (lost, creates_sent)
    for kind in ("429", "500", "529", "cut"):  # the ordinary faults really happened
        assert faults[kind], (kind, faults)
    assert lost_before >= 8
    assert lost_after >= 8

    FIGURES["concurrent_jobs"] = len(jobs)
    FIGURES["concurrent_creates_sent"] = creates_sent
    FIGURES["concurrent_creates_lost_before_server"] = lost_before
    FIGURES["concurrent_creates_lost_after_server"] = lost_after
    FIGURES["concurrent_faults_injected"] = dict(faults)
    FIGURES["concurrent_batches_created"] = batches_created(lossy_creates)
    FIGURES["concurrent_slices_needed"] = slices_needed
    FIGURES["concurrent_task_retries"] = sum(len(job["failures"]) for job in jobs)
    FIGURES["concurrent_seconds"] = round(time.monotonic() - started, 1)
