"""Test-wide set-up: an isolated AIRFLOW_HOME before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-provider-batches-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
