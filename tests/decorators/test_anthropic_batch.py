"""``@task.anthropic_batch`` in real ``airflow dags test`` runs against the emulator.

Each DAG checks several behaviours at once, because a run costs seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.testing import connection_json
from tests.airflow_harness import AirflowEnv, DagRunOutcome
from tests.operators.support import batches_created

pytestmark = pytest.mark.airflow

SENTINEL = "GENERATED-PROMPT-THAT-MUST-NOT-LEAK"

HEADER = f"""
from datetime import datetime, timedelta

from airflow.sdk import DAG, get_current_context, task
from airflow.providers.common.compat.sdk import task_decorator_factory

from airflow_provider_batches.decorators.anthropic_batch import _AnthropicBatchDecoratedOperator

MODEL = "claude-emulator-test"
SENTINEL = "{SENTINEL}"


class CrashAfterCreate(_AnthropicBatchDecoratedOperator):
    def submission_for(self, context, store, job):
        submission = super().submission_for(context, store, job)
        run_submission = submission.run

        def run():
            record = run_submission()
            if get_current_context()["ti"].try_number == 1:
                raise RuntimeError("worker lost after the create")
            return record

        submission.run = run
        return submission


def crashing_batch(python_callable=None, **kwargs):
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=CrashAfterCreate, **kwargs
    )
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_seconds=1, canceling_seconds=0)) as emu:
        yield emu


def run(
    airflow_env: AirflowEnv, emulator: Emulator, dag_id: str, body: str, *, forked: bool = False
) -> DagRunOutcome:
    """``airflow dags test`` of the DAG; ``forked``: from this process, not a new interpreter."""
    path = airflow_env.write_dag(HEADER + body, name=dag_id)
    return airflow_env.dags_test(
        dag_id, path, forked=forked, AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(emulator)
    )


def mapped_rows(outcome: DagRunOutcome, task_id: str) -> list[tuple[int, str, int]]:
    """(map_index, state, try_number) of every instance of a mapped task."""
    return outcome.env.query(
        "SELECT map_index, state, try_number FROM task_instance "
        "WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY map_index",
        outcome.dag_id,
        outcome.run_id,
        task_id,
    )


def test_decorated_tasks_create_wait_and_return_the_manifest(
    airflow_env: AirflowEnv, emulator: Emulator
) -> None:
    outcome = run(
        airflow_env,
        emulator,
        "decorated",
        """
with DAG("decorated", schedule=None, start_date=datetime(2026, 1, 1)):

    @task.anthropic_batch(model=MODEL, max_tokens=8, deferrable=True, poll_interval=0.5)
    def deferred_prompts():
        return [f"{SENTINEL} {n}" for n in range(3)]

    @task.anthropic_batch(deferrable=False, poll_interval=0.2, max_requests_per_batch=2)
    def yielded_requests(ti):  # context keywords reach the function
        assert ti.task_id == "yielded_requests"
        for n in range(3):
            yield {"custom_id": f"r{n}", "params": {"model": MODEL, "max_tokens": 8,
                   "messages": [{"role": "user", "content": f"{SENTINEL} {n}"}]}}

    @task.anthropic_batch(model=MODEL, max_tokens=8, deferrable=False)
    def invalid():
        return ["fine", "   "]

    @task.anthropic_batch(model=MODEL, max_tokens=8, deferrable=True, poll_interval=0.5,
                          fail_on_partial_error=True)
    def errored():
        return ["ok", "[emulator:errored]"]

    deferred_prompts()
    yielded_requests()
    invalid()
    errored()
""",
    )

    assert outcome.task_states() == {
        "deferred_prompts": "success",
        "yielded_requests": "success",
        "invalid": "failed",
        "errored": "failed",
    }, outcome.output[-5000:]
    manifest = outcome.xcom("deferred_prompts")
    assert manifest["request_count"] == 3
    assert manifest["request_counts"]["succeeded"] == 3
    assert len(outcome.xcom("yielded_requests")["batch_ids"]) == 2
    assert "prompts[1] (custom_id 'prompt-1'): prompt must be non-empty text" in outcome.output
    assert SENTINEL not in outcome.rendered_fields_text()
    assert SENTINEL not in outcome.all_xcom_text()
    assert batches_created(emulator) == 1 + 2 + 1  # none for "invalid"


def test_each_mapped_instance_is_its_own_retry_safe_job(airflow_env: AirflowEnv, emulator: Emulator) -> None:
    outcome = run(
        airflow_env,
        emulator,
        "decorated_mapped",
        """
retry_now = {"retries": 1, "retry_delay": timedelta(0)}
with DAG("decorated_mapped", schedule=None, start_date=datetime(2026, 1, 1), default_args=retry_now):

    @crashing_batch(model=MODEL, max_tokens=8, deferrable=True, poll_interval=0.5)
    def ask(topic):
        return [f"{SENTINEL}: first fact about {topic}", f"second fact about {topic}"]

    ask.expand(topic=["tides", "volcanoes", "comets"])
""",
        forked=True,  # the same path as the test above, which runs the real executable
    )

    rows = mapped_rows(outcome, "ask")
    assert [(index, state) for index, state, _ in rows] == [(0, "success"), (1, "success"), (2, "success")], (
        outcome.output[-5000:]
    )
    assert all(tries == 2 for _, _, tries in rows)  # each crashed once after its create
    manifests = outcome.mapped_xcoms("ask")
    assert len({manifest["batch_ids"][0] for manifest in manifests}) == 3
    assert batches_created(emulator) == 3  # the retries re-attached: one batch per instance
    assert SENTINEL not in outcome.rendered_fields_text()
