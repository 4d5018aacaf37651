"""Test-wide set-up: an isolated AIRFLOW_HOME before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-provider-batches-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

from tests.airflow_harness import AirflowEnv


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """A migrated SQLite metadata DB for ``airflow dags test`` runs, shared by the session."""
    env = AirflowEnv(Path(tmp_path_factory.mktemp("airflow-home")))
    env.migrate()
    return env
