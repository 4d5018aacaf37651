"""Clear, then retry, with real task instances (api-server, scheduler, dag-processor, triggerer).

Each task's first try times out with ``cancel_on_timeout=False`` (its batch keeps running) and fails
for good; a person clears it; the cleared try re-attaches and finishes the job, then fails after it
(as a lost worker would); Airflow retries it. The retry must return the same manifest without any
call: one batch per task, sync and deferrable.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from airflow_provider_batches.emulator import Emulator
from tests.airflow_harness import BIN
from tests.reliability.conftest import AirflowCluster, batches_created, connection, start_emulator

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(900)]

DAG_ID = "clear_then_retry"
SIZES = {"sync": 3, "deferred": 4}

DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_batches._compat import AirflowFailException
from airflow_provider_batches.errors import BatchTimeoutError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator


def ask(task, index):
    return {"custom_id": f"{task}-{index}", "params": {"model": "claude-emulator-test", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hello"}]}}


class ClearedThenLost(AnthropicCreateBatchOperator):
    def execute(self, context):
        return self._first_timeout_is_final(super().execute, context)

    def execute_complete(self, context, event=None, manifest=None, round=None):
        return self._first_timeout_is_final(super().execute_complete, context, event, manifest, round)

    def _first_timeout_is_final(self, method, context, *args):
        try:
            return method(context, *args)
        except BatchTimeoutError as exc:  # no retry: a person clears the task instead
            raise AirflowFailException(str(exc)) from exc

    def post_execute(self, context, result=None):
        if context["ti"].try_number == 2:
            raise RuntimeError("the cleared try's worker is lost after its job finished")


with DAG(DAG_ID, schedule=None, start_date=datetime(2026, 1, 1)):
    for task, size in SIZES.items():
        ClearedThenLost(
            task_id=task, requests=[ask(task, i) for i in range(size)], deferrable=task == "deferred",
            # deferred: the trigger's timeout outlasts the deferring workload's end (a trigger event
            # that comes first races Airflow's own bookkeeping of that workload on a loaded machine)
            timeout=4 if task == "sync" else 45, cancel_on_timeout=False, poll_interval=0.5,
            retries=1, retry_delay=timedelta(seconds=1),
        )
"""


CLEAR = """
import sys

from airflow.models.taskinstance import TaskInstance, clear_task_instances
from airflow.utils.session import create_session

with create_session() as session:
    tis = session.query(TaskInstance).filter_by(dag_id=sys.argv[1], run_id=sys.argv[2]).all()
    clear_task_instances(tis, session)
"""


def test_the_retry_of_a_cleared_try_that_finished_returns_its_manifest_without_a_call(
    tmp_path: Path, airflow_cluster: AirflowCluster
) -> None:
    cluster = airflow_cluster
    emulator: Emulator = start_emulator(processing_seconds=600)
    try:
        cluster.env_home.extra_env["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = connection(emulator)
        cluster.write_dag(f"DAG_ID = {DAG_ID!r}\nSIZES = {SIZES!r}\n" + DAG, name=DAG_ID)
        cluster.start_all()
        run_id = cluster.trigger(DAG_ID, "clear-run-1")
        assert cluster.wait_for_run(DAG_ID, run_id, timeout=300) == "failed", cluster.tail_logs()
        assert {task: cluster.task(DAG_ID, run_id, task) for task in SIZES} == {
            task: ("failed", 1) for task in SIZES
        }
        created_by_first_tries = batches_created(emulator)

        emulator.admin.advance_clock(601)  # the batches the first tries left running have ended
        cleared = subprocess.run(  # as the UI's Clear does
            [str(BIN / "python"), "-c", CLEAR, DAG_ID, run_id],
            env=cluster.env_home.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cleared.returncode == 0, cleared.stdout + cleared.stderr
        cluster.wait_for(
            lambda: all(cluster.task(DAG_ID, run_id, task)[1] >= 2 for task in SIZES),
            300,
            "the cleared tries to start",
        )
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=300)

        tasks = {task: cluster.task(DAG_ID, run_id, task) for task in SIZES}
        assert state == "success", f"{tasks}\n{cluster.tail_logs()}"
        assert tasks == {task: ("success", 3) for task in SIZES}  # try 1, the cleared try, its retry
        assert created_by_first_tries == len(SIZES)
        assert batches_created(emulator) == len(SIZES)  # the retries after the clear paid nothing
        for task, size in SIZES.items():
            assert cluster.xcom(DAG_ID, run_id, task)["request_counts"]["succeeded"] == size
        logs = "".join(path.read_text() for path in (cluster.home / "logs").rglob("attempt=3*.log"))
        assert "finished this job" in logs
        assert "submitting the input afresh" not in logs
    finally:
        emulator.stop()
