"""``JobDrive`` on its own: any task that knows how to wait drives a job's rounds, each alike, to the end
(the emulator is the API; the task here waits in this process and notes what it was asked)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.job_state import MemoryJobStore, utcnow
from airflow_provider_batches.operators.drive import DriveOptions, JobDrive
from airflow_provider_batches.operators.rounds import JobRounds
from airflow_provider_batches.operators.submission import JobSubmission
from airflow_provider_batches.policy import WaitSpec
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.requests import PreparedJob, RequestSource, prepare_job
from tests.operators.support import request

LOG = logging.getLogger(__name__)
TRANSIENT = "[emulator:errored_once=overloaded_error]"


class WaitsHere:
    """A ``JobTask`` that waits in this process and notes each wait: (round, batches waited on)."""

    def __init__(self) -> None:
        self.waits: list[tuple[int, list[str]]] = []
        self.pauses: list[datetime] = []

    def wait_for_round(
        self, batch_ids: list[str], spec: WaitSpec, manifest: dict[str, Any], number: int
    ) -> dict[str, dict[str, int]]:
        self.waits.append((number, list(batch_ids)))
        return AnthropicHook().wait_for_batches(batch_ids, spec, log=LOG)

    def wait_for_candidates(self, batch_ids: list[str], spec: WaitSpec) -> object:
        return AnthropicHook().wait_for_batches(batch_ids, spec, log=LOG)

    def pause(self, until: datetime) -> None:
        self.pauses.append(until)
        time.sleep(max(0.0, (until - utcnow()).total_seconds()))


def drive(
    reqs: list[dict[str, Any]], task: WaitsHere, *, redrive: Redrive | None = None, **limits: Any
) -> tuple[JobDrive, PreparedJob]:
    hook, store = AnthropicHook(), MemoryJobStore()
    per_batch = limits.pop("per_batch", 100)

    def submission_for(job: PreparedJob) -> JobSubmission:
        return JobSubmission(hook, store, job, log=LOG, cancel=lambda ids, why: None, **limits)

    rounds = JobRounds(
        hook, redrive, lambda: RequestSource(requests=reqs), max_requests=per_batch, max_bytes=10**6, log=LOG
    )
    options = DriveOptions(
        timeout=60,
        poll_interval=0.05,
        max_poll_interval=0.05,
        progress_interval=0,
        cancel_on_timeout=True,
        fail_on_partial_error=False,
        max_error_rate=None,
    )
    job_drive = JobDrive(
        hook,
        store,
        task,
        options,
        rounds=rounds,
        submission_for=submission_for,
        on_created=lambda ids: None,
        log=LOG,
    )
    return job_drive, prepare_job(RequestSource(requests=reqs), max_requests=per_batch)


def test_a_re_driven_job_is_driven_round_after_round_to_its_outcome(emulator: Emulator) -> None:
    task = WaitsHere()
    job_drive, job = drive([request("a"), request("b", f"b {TRANSIENT}")], task, redrive=Redrive())

    manifest = job_drive.run(job_drive.start(job))

    assert [number for number, _ in task.waits] == [1, 2]
    assert [(entry["round"], entry["kind"]) for entry in manifest["rounds"]] == [(1, "first"), (2, "redrive")]
    assert manifest["request_counts"]["succeeded"] == 2
    record = job_drive.store.load()
    assert record is not None
    assert record.finished
    assert [each.ended_counts is not None for each in record.rounds] == [True, True]


def test_a_round_held_back_by_max_requests_in_flight_is_driven_in_waves(emulator: Emulator) -> None:
    task = WaitsHere()
    reqs = [request(f"r{index}") for index in range(4)]
    job_drive, job = drive(reqs, task, per_batch=2, max_requests_in_flight=3)

    manifest = job_drive.run(job_drive.start(job))

    assert [(number, len(batch_ids)) for number, batch_ids in task.waits] == [(1, 1), (1, 1)]
    assert [batch_id for _, batch_ids in task.waits for batch_id in batch_ids] == manifest["batch_ids"]
    assert manifest["request_counts"]["succeeded"] == 4
    assert "rounds" not in manifest  # one round, no re-drive: the manifest of a plain job
