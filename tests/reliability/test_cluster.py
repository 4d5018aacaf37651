"""Items 2, 3 and 5 with real processes: an api-server, a scheduler (LocalExecutor), a dag-processor and
a triggerer on one SQLite DB, each in its own process group.

One DAG run holds four create tasks, each with its own request count (so that no task can take
another's batch for its own):

* ``sync_after_create``: its worker process is SIGKILLed right after the create call returned, before
  the batch id was recorded; the retry must adopt that batch.
* ``sync_waiting``: SIGKILLed while it waits in the worker (sync mode); the retry re-attaches.
* ``deferred_after_create``: a deferrable task SIGKILLed right after its create call returned.
* ``deferred_trigger``: deferred; the triggerer running its trigger is SIGKILLed (whole process group)
  mid-wait and a new triggerer is started; the run completes.

Then: exactly one batch per task, and the API key in no process log, task log or DB table.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from airflow_provider_batches.emulator import Emulator
from tests.reliability.conftest import (
    FIGURES,
    AirflowCluster,
    assert_no_secret,
    batches_created,
    connection,
    record_faults,
    scan_db,
    start_emulator,
)

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]

CRASH_DAG = """
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, get_current_context

from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator

PIDS = Path(os.environ["RELIABILITY_PID_DIR"])


def first_try():
    return get_current_context()["ti"].try_number == 1


def announce(task_id, moment):
    (PIDS / f"{task_id}.{moment}.tmp").write_text(str(os.getpid()))
    (PIDS / f"{task_id}.{moment}.tmp").rename(PIDS / f"{task_id}.{moment}")


class KilledAfterCreate(AnthropicCreateBatchOperator):
    def submission_for(self, context, store, job):
        submission = super().submission_for(context, store, job)
        paid_call = submission.create

        def create(part, watermark, exclude, proof_id):
            batch = paid_call(part, watermark, exclude, proof_id)
            if first_try():
                announce(self.task_id, "created")
                time.sleep(600)  # the test SIGKILLs this process here, before the id is recorded
            return batch

        submission.create = create
        return submission


class KilledWhileWaiting(AnthropicCreateBatchOperator):
    def submission_for(self, context, store, job):
        submission = super().submission_for(context, store, job)
        run_submission = submission.run

        def run():
            record = run_submission()
            if first_try():
                announce(self.task_id, "waiting")
            return record

        submission.run = run
        return submission


def asks(prefix, count):
    return [
        {"custom_id": f"{prefix}-{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 20,
         "messages": [{"role": "user", "content": f"{prefix} question {i}"}]}}
        for i in range(count)
    ]


with DAG(
    "reliability_crashes",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
):
    KilledAfterCreate(task_id="sync_after_create", requests=asks("a", 3), deferrable=False, poll_interval=1)
    KilledWhileWaiting(task_id="sync_waiting", requests=asks("b", 4), deferrable=False, poll_interval=1)
    KilledAfterCreate(
        task_id="deferred_after_create", requests=asks("c", 5), deferrable=True, poll_interval=1
    )
    AnthropicCreateBatchOperator(
        task_id="deferred_trigger", requests=asks("d", 6), deferrable=True, poll_interval=1
    )
"""

DAG_ID = "reliability_crashes"
SIZES = {"sync_after_create": 3, "sync_waiting": 4, "deferred_after_create": 5, "deferred_trigger": 6}


def kill_task_process(cluster: AirflowCluster, marker: Path) -> int:
    """SIGKILL the task's own process (the supervisor above it then reports the task failed)."""
    pid = int(cluster.wait_for(lambda: marker.exists() and marker.read_text(), 180, f"{marker.name}"))
    os.kill(pid, signal.SIGKILL)
    return pid


def test_worker_and_triggerer_crashes_leave_one_batch_per_task(
    tmp_path: Path, airflow_cluster: AirflowCluster
) -> None:
    cluster = airflow_cluster
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    emulator: Emulator = start_emulator(processing_seconds=25)
    try:
        cluster.env_home.extra_env.update(
            {"AIRFLOW_CONN_ANTHROPIC_DEFAULT": connection(emulator), "RELIABILITY_PID_DIR": str(pid_dir)}
        )
        cluster.env_home.extra_env["AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"] = "10"
        cluster.write_dag(CRASH_DAG, name=DAG_ID)
        cluster.start_all()
        run_id = cluster.trigger(DAG_ID, "crash-run-1")

        # (a) right after the create call returned, sync and deferrable.
        kill_task_process(cluster, pid_dir / "sync_after_create.created")
        kill_task_process(cluster, pid_dir / "deferred_after_create.created")
        # (b) while waiting in the worker: the batch is recorded and being polled.
        marker = pid_dir / "sync_waiting.waiting"
        cluster.wait_for(marker.exists, 180, "sync_waiting to start waiting")
        time.sleep(2)
        kill_task_process(cluster, marker)
        crashes = 3

        # (c) the triggerer dies while it runs the deferred task's trigger; a new one takes over.
        cluster.wait_for(
            lambda: (
                cluster.task(DAG_ID, run_id, "deferred_trigger")[0] == "deferred"
                and cluster.query("SELECT kwargs FROM trigger")
            ),
            180,
            "deferred_trigger to be deferred with its trigger row",
        )
        time.sleep(3)  # the trigger is polling
        trigger_rows = cluster.query("SELECT classpath, kwargs FROM trigger")
        cluster.kill("triggerer")
        crashes += 1
        time.sleep(3)
        cluster.start("triggerer")

        state = cluster.wait_for_run(DAG_ID, run_id, timeout=420)
        tasks = {task: cluster.task(DAG_ID, run_id, task) for task in SIZES}
        assert state == "success", f"{tasks}\n{cluster.tail_logs()}"
        assert {task: s for task, (s, _) in tasks.items()} == dict.fromkeys(SIZES, "success")
        for task in ("sync_after_create", "sync_waiting", "deferred_after_create"):
            assert tasks[task][1] >= 2, f"{task} was not retried: {tasks}"

        # One batch per task, each of the task's own size.
        stats = emulator.admin.stats()
        record_faults(stats)
        manifests = {task: cluster.xcom(DAG_ID, run_id, task) for task in SIZES}
        ids = [manifests[task]["batch_ids"] for task in SIZES]
        assert all(len(batch_ids) == 1 for batch_ids in ids), manifests
        assert len({batch_ids[0] for batch_ids in ids}) == len(SIZES)
        assert {task: manifests[task]["request_count"] for task in SIZES} == SIZES
        created = batches_created(emulator)
        FIGURES["batches_duplicated"] += max(0, created - len(SIZES))
        assert created == len(SIZES), stats["batches_created"]
        FIGURES["crashes_survived"] += crashes

        # The trigger ran in both triggerers: the killed one, then its replacement.
        trigger_logs = list((cluster.home / "logs").rglob("task_id=deferred_trigger/*.trigger.*.log"))
        starts = sum(path.read_text().count("starting") for path in trigger_logs)
        assert len(trigger_logs) >= 2, trigger_logs
        assert starts >= 2, trigger_logs

        # Item 5: the serialized trigger row, every table, every log of every process.
        assert trigger_rows
        assert "AnthropicBatchTrigger" in str(trigger_rows)
        found, rows = scan_db(cluster.env_home.db_path)
        assert not found, found
        assert rows["xcom"], rows
        assert list((cluster.home / "logs").rglob("*.log")), "no task or triggerer log file was written"
        cluster.stop_all()  # flush every log before scanning
        assert_no_secret(cluster.home, texts={"trigger rows": repr(trigger_rows)})
    finally:
        emulator.stop()
