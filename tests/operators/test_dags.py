"""Real ``airflow dags test`` runs against the emulator: pipelines, outcomes, validation and retries.

Each DAG checks several behaviours at once, because a run costs seconds. The sync pipeline runs the
real ``airflow`` executable; the others fork it from the harness's zygote, where a new interpreter
would add only its start-up (the deferrable path's real executable is the example pipeline's test).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.errors import NotFoundError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.testing import connection_json
from tests.airflow_harness import AirflowEnv, DagRunOutcome
from tests.operators.support import batches_created, request

HAS_TASK_STATE_STORE = Version(Version(airflow_version).base_version) >= Version("3.3")

pytestmark = pytest.mark.airflow

SENTINEL = "PROMPT-TEXT-THAT-MUST-NOT-LEAK"

HEADER = """
from datetime import datetime, timedelta

from airflow.sdk import DAG, get_current_context

from airflow_provider_batches.operators.batches import (
    AnthropicCancelBatchOperator,
    AnthropicCreateBatchOperator,
    AnthropicDeleteBatchOperator,
)
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor

MODEL = "claude-emulator-test"


def ask(custom_id, text="hello"):
    return {"custom_id": custom_id, "params": {"model": MODEL, "max_tokens": 8,
            "messages": [{"role": "user", "content": text}]}}


def first_try():
    return get_current_context()["ti"].try_number == 1
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """Batches take a second to end, so sensors really wait; cancels end them at once."""
    with Emulator(EmulatorConfig(processing_seconds=1, canceling_seconds=0)) as emu:
        yield emu


def run(
    airflow_env: AirflowEnv, emulator: Emulator, dag_id: str, body: str, *, forked: bool = True, **conf: str
) -> DagRunOutcome:
    """``airflow dags test`` of the DAG, forked from the harness's zygote unless ``forked=False`` (the
    real executable: the sync pipeline here, the deferrable one in the example DAGs' tests)."""
    path = airflow_env.write_dag(HEADER + body, name=dag_id)
    return airflow_env.dags_test(
        dag_id,
        path,
        conf=conf or None,
        forked=forked,
        AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(emulator),
    )


def test_sync_pipeline_outcomes_and_validation(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests_file = tmp_path / "requests.jsonl"
    lines = [request(f"r{i}", f"{SENTINEL} {i}") for i in range(4)] + [request("r4", "[emulator:errored]")]
    requests_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text(json.dumps(request("ok")) + "\n" + json.dumps(request("has space")) + "\n")

    outcome = run(
        airflow_env,
        emulator,
        "sync_pipeline",
        """
with DAG("sync_pipeline", schedule=None, start_date=datetime(2026, 1, 1)):
    create = AnthropicCreateBatchOperator(
        task_id="create", requests_path="{{ dag_run.conf['requests_path'] }}", deferrable=False,
        wait_for_completion=False, max_requests_per_batch=2,
    )
    wait = AnthropicBatchSensor(
        task_id="wait", batch_id=create.output, mode="reschedule", poke_interval=1, deferrable=False
    )
    cancel = AnthropicCancelBatchOperator(task_id="cancel", batch_id=create.output)
    delete = AnthropicDeleteBatchOperator(task_id="delete", batch_id=create.output)
    create >> wait >> cancel >> delete

    AnthropicCreateBatchOperator(
        task_id="errored_warns", requests=[ask("a"), ask("b", "[emulator:errored]")], poll_interval=0.2,
        deferrable=False,
    )
    AnthropicCreateBatchOperator(
        task_id="errored_fails", requests=[ask("a"), ask("b", "[emulator:expired]")], poll_interval=0.2,
        deferrable=False, fail_on_partial_error=True,
    )
    AnthropicCreateBatchOperator(
        task_id="all_canceled", requests=[ask("a", "[emulator:canceled]")], poll_interval=0.2,
        deferrable=False,
    )
    AnthropicCreateBatchOperator(
        task_id="invalid", requests_path="{{ dag_run.conf['bad_path'] }}", deferrable=False
    )
""",
        forked=False,
        requests_path=str(requests_file),
        bad_path=str(bad_file),
    )

    assert outcome.task_states() == {
        "create": "success",
        "wait": "success",
        "cancel": "success",
        "delete": "success",
        "errored_warns": "success",
        "errored_fails": "failed",
        "all_canceled": "skipped",
        "invalid": "failed",
    }, outcome.output[-5000:]
    manifest = outcome.xcom("create")
    assert len(manifest["batch_ids"]) == 3
    assert manifest["request_count"] == 5
    assert outcome.xcom("wait")["request_counts"]["errored"] == 1
    assert outcome.xcom("create", key="_link_AnthropicBatchLink").startswith("https://console.anthropic.com/")
    assert SENTINEL not in outcome.rendered_fields_text()
    assert SENTINEL not in outcome.all_xcom_text()
    assert "line 2 (custom_id 'has space')" in outcome.output
    assert "XCom not found" not in outcome.output  # the failed task's console link looks nothing up
    assert "Some requests did not succeed: 1 succeeded, 1 errored" in outcome.output
    assert batches_created(emulator) == 3 + 3  # the split job and one per outcome task; none for "invalid"
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection_json(emulator))
    for batch_id in manifest["batch_ids"]:  # the delete task removed the whole job
        with pytest.raises(NotFoundError):
            AnthropicHook().get_batch(batch_id)


def test_deferrable_pipeline_and_outcomes(airflow_env: AirflowEnv, emulator: Emulator) -> None:
    outcome = run(
        airflow_env,
        emulator,
        "deferred_pipeline",
        """
with DAG("deferred_pipeline", schedule=None, start_date=datetime(2026, 1, 1)):
    create = AnthropicCreateBatchOperator(
        task_id="create", requests=[ask(f"r{i}") for i in range(3)], max_requests_per_batch=2,
        deferrable=True, poll_interval=0.5,
    )
    wait = AnthropicBatchSensor(task_id="wait", batch_id=create.output, deferrable=True, poke_interval=1)
    create >> wait

    AnthropicCreateBatchOperator(
        task_id="errored_warns", requests=[ask("a"), ask("b", "[emulator:errored]")], deferrable=True,
        poll_interval=0.5,
    )
    AnthropicCreateBatchOperator(
        task_id="errored_fails", requests=[ask("a"), ask("b", "[emulator:errored]")], deferrable=True,
        poll_interval=0.5, fail_on_partial_error=True,
    )
    AnthropicCreateBatchOperator(
        task_id="all_canceled", requests=[ask("a", "[emulator:canceled]")], deferrable=True, poll_interval=0.5
    )
""",
    )

    assert outcome.task_states() == {
        "create": "success",
        "wait": "success",
        "errored_warns": "success",
        "errored_fails": "failed",
        "all_canceled": "skipped",
    }, outcome.output[-5000:]
    manifest = outcome.xcom("create")
    assert len(manifest["batch_ids"]) == 2
    assert manifest["request_counts"]["succeeded"] == 3
    assert outcome.xcom("create", key="batch_ids") == manifest["batch_ids"]
    assert outcome.xcom("create", key="_link_AnthropicBatchLink").startswith("https://console.anthropic.com/")
    assert outcome.xcom("wait")["request_counts"]["succeeded"] == 3
    assert batches_created(emulator) == 2 + 3


def test_retries_reattach_instead_of_creating_again(airflow_env: AirflowEnv, emulator: Emulator) -> None:
    # Each task has its own request count, so that no task can mistake another's batch for its orphan.
    outcome = run(
        airflow_env,
        emulator,
        "retries",
        """
class CrashBeforeRecord(AnthropicCreateBatchOperator):
    def submission_for(self, context, store, job):
        submission = super().submission_for(context, store, job)
        paid_call = submission.create

        def create(part, watermark, exclude, proof_id):
            batch = paid_call(part, watermark, exclude, proof_id)
            if first_try():
                raise RuntimeError("worker lost between the create and its record")
            return batch

        submission.create = create
        return submission


class CrashAfterCreate(AnthropicCreateBatchOperator):
    def submission_for(self, context, store, job):
        submission = super().submission_for(context, store, job)
        run_submission = submission.run

        def run():
            record = run_submission()
            if first_try():
                raise RuntimeError("worker lost after the create")
            return record

        submission.run = run
        return submission


class CrashOnResume(AnthropicCreateBatchOperator):
    def execute_complete(self, context, event=None, manifest=None):
        if first_try():
            raise RuntimeError("worker lost after the trigger fired")
        return super().execute_complete(context, event=event, manifest=manifest)


class CrashAfterSyncSuccess(AnthropicCreateBatchOperator):
    def execute(self, context):
        manifest = super().execute(context)
        if first_try():
            raise RuntimeError("worker lost after the job finished, before its success was recorded")
        return manifest


class CrashAfterDeferredSuccess(AnthropicCreateBatchOperator):
    def execute_complete(self, context, event=None, manifest=None):
        result = super().execute_complete(context, event=event, manifest=manifest)
        if first_try():
            raise RuntimeError("XCom push failed after the job finished")
        return result


def asks(count):
    return [ask(f"r{i}") for i in range(count)]


retry_now = {"retries": 1, "retry_delay": timedelta(0)}
with DAG("retries", schedule=None, start_date=datetime(2026, 1, 1), default_args=retry_now):
    CrashBeforeRecord(task_id="sync_orphan", requests=asks(1), deferrable=False, poll_interval=0.5)
    CrashAfterCreate(task_id="sync_recorded", requests=asks(2), deferrable=False, poll_interval=0.5)
    CrashBeforeRecord(task_id="deferred_orphan", requests=asks(3), deferrable=True, poll_interval=0.5)
    CrashOnResume(task_id="deferred_resumed", requests=asks(4), deferrable=True, poll_interval=0.5)
    CrashAfterSyncSuccess(task_id="sync_finished", requests=asks(5), deferrable=False, poll_interval=0.5)
    CrashAfterDeferredSuccess(
        task_id="deferred_finished", requests=asks(6), deferrable=True, poll_interval=0.5
    )
""",
    )

    tasks = [
        "sync_orphan",
        "sync_recorded",
        "deferred_orphan",
        "deferred_resumed",
        "sync_finished",
        "deferred_finished",
    ]
    assert outcome.task_states() == dict.fromkeys(tasks, "success"), outcome.output[-5000:]
    assert {task: outcome.tries(task) for task in tasks} == dict.fromkeys(tasks, 2)
    assert batches_created(emulator) == 6  # exactly one batch per task
    assert "finished this job" in outcome.output  # the retries after success paid nothing
    assert "adopting batch" in outcome.output
    # 3.3+ keeps the record in task_state_store; older versions use the documented Variable fallback.
    used_fallback = "task_state_store is not available" in outcome.output
    assert used_fallback is not HAS_TASK_STATE_STORE


def test_queue_aware_submission_in_deferred_waves(airflow_env: AirflowEnv) -> None:
    """A queue of 4 requests: ``max_requests_in_flight=4`` sends 2 batches of 2, then the third; without
    it, the third create is refused (429; the client does not retry) and the operator sends it again
    once the task's first batches end."""
    config = EmulatorConfig(processing_seconds=1, canceling_seconds=0, max_queued_requests=4)
    with Emulator(config) as emulator:
        no_client_retries = {**json.loads(connection_json(emulator)), "extra": {"max_retries": 0}}
        dag = airflow_env.write_dag(
            HEADER
            + """
with DAG("queue_aware", schedule=None, start_date=datetime(2026, 1, 1)):
    limited = AnthropicCreateBatchOperator(
        task_id="limited", requests=[ask(f"l{i}") for i in range(6)], max_requests_per_batch=2,
        max_requests_in_flight=4, deferrable=True, poll_interval=0.5,
    )
    refused = AnthropicCreateBatchOperator(
        task_id="refused", requests=[ask(f"q{i}") for i in range(6)], max_requests_per_batch=2,
        deferrable=True, poll_interval=0.5,
    )
    limited >> refused
""",
            name="queue_aware",
        )
        outcome = airflow_env.dags_test(
            "queue_aware", dag, forked=True, AIRFLOW_CONN_ANTHROPIC_DEFAULT=json.dumps(no_client_retries)
        )
        creates = emulator.admin.stats()["calls"]["POST /v1/messages/batches"]

    assert outcome.task_states() == {"limited": "success", "refused": "success"}, outcome.output[-5000:]
    for task_id in ("limited", "refused"):
        manifest = outcome.xcom(task_id)
        assert len(manifest["batch_ids"]) == 3
        assert manifest["request_counts"]["succeeded"] == 6
    assert creates["200"] == 6  # one batch per slice, none twice
    assert creates.get("429", 0) >= 1  # only the task without a limit was refused


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Batches take 3 s to end: a wait with a 0.5 s progress interval logs several progress lines."""
    with Emulator(EmulatorConfig(processing_seconds=3, canceling_seconds=0)) as emu:
        yield emu


def test_waits_log_progress_in_the_task_log_and_a_typo_fails_before_spend(
    airflow_env: AirflowEnv, slow_emulator: Emulator
) -> None:
    outcome = run(
        airflow_env,
        slow_emulator,
        "progress_and_typo",
        """
with DAG("progress_and_typo", schedule=None, start_date=datetime(2026, 1, 1)):
    AnthropicCreateBatchOperator(
        task_id="sync_wait", requests=[ask("a"), ask("b")], poll_interval=2, max_poll_interval=2,
        progress_interval=0.5, deferrable=False,
    )
    AnthropicCreateBatchOperator(
        task_id="deferred_wait", requests=[ask("c")], poll_interval=2, max_poll_interval=2,
        progress_interval=0.5, deferrable=True,
    )
    AnthropicCreateBatchOperator(
        task_id="typo", requests=[ask("x"), {"custom_id": "y", "params": {"model": "claude-sonet-4-6",
        "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}}], deferrable=False,
    )
""",
    )

    assert outcome.task_states() == {"sync_wait": "success", "deferred_wait": "success", "typo": "failed"}
    progress = [line for line in outcome.output.splitlines() if "Still waiting (round 1) after" in line]
    # 3 s of waiting, a line every 0.5 s, polls every 2 s: the lines do not wait for the polls
    assert len([line for line in progress if "AnthropicCreateBatchOperator]" in line]) >= 3  # sync
    assert len([line for line in progress if "AnthropicBatchTrigger]" in line]) >= 3  # deferred
    assert "did you mean claude-sonnet-4-6 or" in outcome.output
    assert "requests[1] (custom_id 'y')" in outcome.output
    assert sum(slow_emulator.admin.stats()["batches_created"].values()) == 2  # none for the typo
