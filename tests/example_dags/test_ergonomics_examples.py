"""The TaskFlow and spend-approval example DAGs, run with ``airflow dags test`` against the emulator.

The approval path: on Airflow 3.3 ``dags test`` parks the ApprovalOperator in ``awaiting_input``
and waits for a response recorded by someone else in the same metadata DB (what the Required
Actions UI does through the API server). The test answers the way that API does: it records the
response on the task's HITL detail and resumes the task (``handle_event_submit``). On Airflow 3.1 the
operator defers to a trigger instead; only the below-threshold path is run there.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.testing import connection_json
from tests.airflow_harness import BIN, AirflowEnv, DagRunOutcome
from tests.example_dags.test_example_dags import EXAMPLES, run_example, write_requests
from tests.example_dags.test_example_dags import emulator as emulator  # the fixture
from tests.operators.support import batches_created

pytestmark = pytest.mark.airflow

APPROVAL = "anthropic_batch_spend_approval"
HAS_AWAITING_INPUT = Version(Version(airflow_version).base_version) >= Version("3.3")

RESPOND = """
import sys
from sqlalchemy import select
from airflow._shared.timezones import timezone
from airflow.models.hitl import HITLDetail
from airflow.models.taskinstance import TaskInstance
from airflow.models.trigger import handle_event_submit
from airflow.triggers.base import TriggerEvent
from airflow.utils.session import create_session

dag_id, task_id, option = sys.argv[1:4]
with create_session() as session:
    ti = session.scalar(
        select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id)
        .order_by(TaskInstance.start_date.desc())
    )
    detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
    detail.responded_by = {"id": "approver", "name": "approver"}
    detail.responded_at = timezone.utcnow()
    detail.chosen_options = [option]
    detail.params_input = {}
    session.add(detail)
    handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
"""


def approval_conf(tmp_path: Path, threshold: float) -> dict[str, object]:
    requests = write_requests(tmp_path / "requests.jsonl", 4)
    return {"requests_path": f"file://{requests}", "approval_threshold_usd": threshold}


def run_with_answer(
    airflow_env: AirflowEnv, emulator: Emulator, conf: dict[str, object], answer: str
) -> DagRunOutcome:
    """``dags test`` of the approval DAG in the background, answering its approval when it asks."""
    dag_file = Path(shutil.copy(EXAMPLES / f"{APPROVAL}.py", airflow_env.dags_folder / f"{APPROVAL}.py"))
    env = airflow_env.env(AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(emulator))
    before = {row[0] for row in airflow_env.query("SELECT run_id FROM dag_run WHERE dag_id = ?", APPROVAL)}
    args = [str(BIN / "airflow"), "dags", "test", APPROVAL, "-f", str(dag_file), "-c", json.dumps(conf)]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            deadline = time.monotonic() + 180
            while not airflow_env.query(
                "SELECT 1 FROM task_instance WHERE dag_id = ? AND task_id = 'approve_spend' "
                "AND state = 'awaiting_input'",
                APPROVAL,
            ):
                assert proc.poll() is None, "dags test ended before asking for approval"
                assert time.monotonic() < deadline, "the approval was never asked for"
                time.sleep(0.5)
            answered = subprocess.run(
                [str(BIN / "python"), "-c", textwrap.dedent(RESPOND), APPROVAL, "approve_spend", answer],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert answered.returncode == 0, answered.stderr[-3000:]
            output, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    after = airflow_env.query("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id", APPROVAL)
    new = [row[0] for row in after if row[0] not in before]
    return DagRunOutcome(APPROVAL, new[-1] if new else None, proc.returncode, output, airflow_env)


def test_the_taskflow_example_runs_one_job_per_topic_and_exports_each(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path
) -> None:
    conf = {
        "topics": ["tides", "volcanoes", "comets"],
        "questions_per_topic": 2,
        "destination": f"file://{tmp_path}/",
    }
    run = run_example(airflow_env, emulator, "anthropic_batch_taskflow", conf)

    assert batches_created(emulator) == 3
    manifests = sorted(tmp_path.rglob("_manifest.json"))
    assert [path.parent.name for path in manifests] == ["0", "1", "2"]  # one export per map index
    for path in manifests:
        (batch_id,) = json.loads(path.read_text())["batch_ids"]
        assert (path.parent / f"{batch_id}.jsonl").exists()
    assert [manifest["request_count"] for manifest in run.mapped_xcoms("ask_about")] == [2, 2, 2]


def test_below_the_threshold_the_batch_is_created_without_asking(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path
) -> None:
    run = run_example(airflow_env, emulator, APPROVAL, approval_conf(tmp_path, threshold=1000))

    states = run.task_states()
    assert states["approve_spend"] == "skipped"
    assert states["within_budget"] == "success"
    assert states["create_batch"] == "success"
    assert run.xcom("create_batch")["request_count"] == 4
    assert batches_created(emulator) == 1


@pytest.mark.skipif(not HAS_AWAITING_INPUT, reason="dags test parks approvals in awaiting_input on 3.3+")
@pytest.mark.parametrize(
    ("answer", "create_state", "batches"), [("Approve", "success", 1), ("Reject", "skipped", 0)]
)
def test_over_the_threshold_the_answer_decides_whether_the_batch_is_created(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path, answer: str, create_state: str, batches: int
) -> None:
    run = run_with_answer(airflow_env, emulator, approval_conf(tmp_path, threshold=0), answer)

    assert run.task_states() == {
        "count_tokens": "success",
        "route_by_cost": "success",
        "approve_spend": "success",
        "within_budget": "skipped",
        "create_batch": create_state,
    }, run.output[-5000:]
    assert batches_created(emulator) == batches


def test_the_deadline_example_parses_and_serializes_with_a_batch_window_alert() -> None:
    """``dags test`` of a DAG with a deadline fails in Airflow 3.3.2 itself when the run ends (it reads
    the unsaved alerts back by id), so this example is loaded and serialized as the DAG processor does."""

    try:  # Airflow 3.3
        from airflow.serialization.serialized_objects import DagSerialization as Serializer
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as Serializer

    spec = importlib.util.spec_from_file_location(
        "deadline_example", EXAMPLES / "anthropic_batch_deadline.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag

    (alert,) = dag.deadline
    assert alert.interval.total_seconds() == 24.5 * 3600
    assert alert.callback.path == "airflow_provider_batches.deadlines.log_missed_batch_window"
    assert Serializer.to_dict(dag)["dag"]["deadline"]
