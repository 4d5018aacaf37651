"""Every example DAG runs with ``airflow dags test`` against the emulator and does what it says.

The pipeline runs the real ``airflow`` executable; the other examples run the same command forked
from this process (``AirflowEnv.airflow_forked``), where a new interpreter would add only its start-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.testing import connection_json
from tests.airflow_harness import AirflowEnv

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(processing_seconds=1, canceling_seconds=0)) as running:
        monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection_json(running))
        yield running


def write_requests(path: Path, count: int, *, errored_every: int = 0) -> Path:
    with path.open("w") as out:
        for index in range(count):
            text = f"Question {index}: what is {index} squared?"
            if errored_every and index % errored_every == 0:
                text += " [emulator:errored=overloaded_error]"
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": text}],
            }
            out.write(json.dumps({"custom_id": f"q-{index}", "params": params}) + "\n")
    return path


def start_example(
    airflow_env: AirflowEnv, emulator: Emulator, dag_id: str, conf: dict[str, Any], *, forked: bool = True
) -> Any:
    return airflow_env.dags_test(
        dag_id,
        EXAMPLES / f"{dag_id}.py",
        conf=conf,
        forked=forked,
        AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection_json(emulator),
    )


def run_example(
    airflow_env: AirflowEnv, emulator: Emulator, dag_id: str, conf: dict[str, Any], *, forked: bool = True
) -> Any:
    run = start_example(airflow_env, emulator, dag_id, conf, forked=forked)
    assert run.state == "success", run.output[-5000:]
    return run


def test_the_pipeline_counts_creates_re_drives_exports_and_summarizes(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "requests.jsonl", 30, errored_every=10)  # overloaded every time
    conf = {
        "requests_path": f"file://{requests}",
        "destination": f"file://{tmp_path}/out/",
        "max_cost_usd": 5,
    }
    run = run_example(airflow_env, emulator, "anthropic_batch_pipeline", conf, forked=False)
    assert run.xcom("count_tokens")["request_count"] == 30
    rounds = run.xcom("create_batch")["rounds"]
    assert [entry["request_count"] for entry in rounds] == [30, 3, 3]  # re-driven up to max_rounds=3
    summary = run.xcom("summarize")
    assert summary["counts"]["succeeded"] == 27
    assert summary["counts"]["errored"] == 3
    assert summary["first_answer"]
    assert summary["cost_usd"] > 0
    assert sum(emulator.admin.stats()["batches_created"].values()) == 3


def test_the_pipeline_budget_guard_stops_before_any_batch(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "requests.jsonl", 5)
    conf = {
        "requests_path": f"file://{requests}",
        "destination": f"file://{tmp_path}/out/",
        "max_cost_usd": 0,
    }
    run = start_example(airflow_env, emulator, "anthropic_batch_pipeline", conf)
    assert run.task_states()["count_tokens"] == "failed"
    assert "over max_cost_usd" in run.output
    assert emulator.admin.stats()["batches_created"] == {}


def test_the_large_job_is_split_into_several_batches(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "requests.jsonl", 25)
    conf = {
        "requests_path": f"file://{requests}",
        "destination": f"file://{tmp_path}/out/",
        "max_requests_per_batch": 10,
    }
    run = run_example(airflow_env, emulator, "anthropic_large_batch_job", conf)
    batch_ids = run.xcom("create_batches")["batch_ids"]
    assert len(batch_ids) == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl.gz")) == sorted(
        f"{b}.jsonl.gz" for b in batch_ids
    )


def test_the_cleanup_cancels_stale_and_deletes_old_batches(
    airflow_env: AirflowEnv, emulator: Emulator
) -> None:
    emulator.admin.set_config(processing_seconds=3600)
    hook = AnthropicHook()
    params = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    stale = hook.create_batch([{"custom_id": "a", "params": params}]).id
    emulator.admin.set_config(processing_seconds=0)
    old = hook.create_batch([{"custom_id": "b", "params": params}]).id
    hook.get_batch(old)  # ends it
    run_example(
        airflow_env, emulator, "anthropic_batch_cleanup", {"cancel_after_hours": 0, "delete_after_days": 0}
    )
    assert hook.get_batch(stale).request_counts.canceled == 1
    assert old not in [b.id for b in hook.iter_batches()]


def test_the_sensor_waits_for_outside_batches_then_exports(
    airflow_env: AirflowEnv, emulator: Emulator, tmp_path: Path
) -> None:
    hook = AnthropicHook()
    params = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    batch_ids = [hook.create_batch([{"custom_id": f"r{i}", "params": params}]).id for i in range(2)]
    conf = {"batch_ids": batch_ids, "destination": f"file://{tmp_path}/out/"}
    run_example(airflow_env, emulator, "anthropic_batch_sensor", conf)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl")) == sorted(
        f"{b}.jsonl" for b in batch_ids
    )
