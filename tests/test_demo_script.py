"""``make demo``: a failed run prints why each task failed, not only where the log is."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"

# The shape of ``airflow dags test`` output around a failed task (Airflow 3), shortened.
OUTPUT = """\
2026-11-26T23:09:30.176817Z [info     ] [DAG TEST] starting task_id=count_tokens map_index=-1 [dag]
2026-11-26T23:10:02.819241Z [error    ] Task failed with exception     [task] loc=task_runner.py:1651
Traceback (most recent call last):
  File "/venv/httpx/_transports/default.py", line 101, in map_httpcore_exceptions
    yield
httpx.ConnectError: [Errno -2] Name or service not known

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/src/airflow_provider_batches/client_core.py", line 248, in request_plan
    raise APIConnectionError(
airflow_provider_batches.errors.APIConnectionError: could not reach the API; gave up after 3 attempts
2026-11-26T23:10:02.842018Z [info     ] ::group::Post Execute          [task] loc=task_runner.py:1652
2026-11-26T23:10:04.176817Z [info     ] [DAG TEST] starting task_id=create_batch map_index=-1 [dag]
2026-11-26T23:10:05.819241Z [error    ] Task failed with exception     [task] loc=task_runner.py:1651
Traceback (most recent call last):
  File "/src/airflow_provider_batches/requests.py", line 300, in prepare_job
    raise checker.error(source)
airflow_provider_batches.errors.RequestValidationError: 1 invalid request(s) in x.jsonl; nothing was sent:
  - line 2 (custom_id 'has space'): custom_id 'has space' is invalid
2026-11-26T23:10:05.842018Z [info     ] ::group::Post Execute          [task] loc=task_runner.py:1652
"""


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cause_of_each_failed_task_is_its_last_raised_exception() -> None:
    causes = load_demo().failure_causes(OUTPUT)
    assert causes == {
        "count_tokens": "airflow_provider_batches.errors.APIConnectionError: could not reach the API; "
        "gave up after 3 attempts",
        "create_batch": "airflow_provider_batches.errors.RequestValidationError: 1 invalid request(s) in "
        "x.jsonl; nothing was sent:\n    - line 2 (custom_id 'has space'): custom_id 'has space' is invalid",
    }


def test_output_without_a_traceback_has_no_cause() -> None:
    assert load_demo().failure_causes("2026-11-26T23:10:02Z [info] [DAG TEST] starting task_id=x\n") == {}
