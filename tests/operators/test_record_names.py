"""The Variable fallback's record names (Airflow 3.1-3.2), with Airflow's real Variables: a task of a
real ``airflow dags test`` run keeps the records of two task instances whose names join alike."""

from __future__ import annotations

import pytest

from airflow_provider_batches.job_state import legacy_variable_key, variable_key
from tests.airflow_harness import AirflowEnv

pytestmark = pytest.mark.airflow

DAG = """
from datetime import datetime
from types import SimpleNamespace

from airflow.sdk import DAG, task

from airflow_provider_batches.job_state import JobRecord, VariableJobStore
from airflow_provider_batches.requests import RequestSource, prepare_job


def record(count):
    params = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    requests = [{"custom_id": f"r{i}", "params": params} for i in range(count)]
    return JobRecord.for_job(prepare_job(RequestSource(requests=requests)))


@task
def keep_two_records():
    one = VariableJobStore(SimpleNamespace(dag_id="etl", run_id="scheduled__2026-12-01", task_id="t"))
    other = VariableJobStore(SimpleNamespace(dag_id="etl__scheduled", run_id="2026-12-01", task_id="t"))
    one.save(record(1))
    other.save(record(2))
    return [one.load().request_count, other.load().request_count]


with DAG("record_names", schedule=None, start_date=datetime(2026, 1, 1)):
    keep_two_records()
"""


def test_two_task_instances_whose_names_join_alike_keep_two_variables(airflow_env: AirflowEnv) -> None:
    outcome = airflow_env.dags_test(
        "record_names", airflow_env.write_dag(DAG, name="record_names"), forked=True
    )

    assert outcome.task_states() == {"keep_two_records": "success"}, outcome.output[-3000:]
    assert outcome.xcom("keep_two_records") == [1, 2]
    keys = {row[0] for row in airflow_env.query("SELECT key FROM variable")}
    assert variable_key("etl", "scheduled__2026-12-01", "t", -1) in keys
    assert variable_key("etl__scheduled", "2026-12-01", "t", -1) in keys
    assert legacy_variable_key("etl", "scheduled__2026-12-01", "t", -1) not in keys
