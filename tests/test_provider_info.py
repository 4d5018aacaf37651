"""The provider is discoverable by Airflow, and everything its metadata names can be imported."""

from __future__ import annotations

import importlib
import subprocess
import sys

from airflow_provider_batches.get_provider_info import get_provider_info
from tests.airflow_harness import BIN


def test_airflow_lists_the_provider() -> None:
    result = subprocess.run(
        [str(BIN / "airflow"), "providers", "list"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "airflow-provider-batches" in result.stdout


def test_every_module_named_in_the_provider_info_imports() -> None:
    info = get_provider_info()
    modules = [
        module
        for section in ("hooks", "operators", "sensors", "triggers")
        for entry in info.get(section, [])
        for module in entry["python-modules"]
    ]
    modules += [entry["python-module"] for entry in info.get("transfers", [])]
    for module in modules:
        importlib.import_module(module)


def test_every_class_path_in_the_provider_info_resolves() -> None:
    info = get_provider_info()
    paths = [conn["hook-class-name"] for conn in info["connection-types"]] + info.get("extra-links", [])
    paths += [entry["class-name"] for entry in info.get("task-decorators", [])]
    for path in paths:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


def test_the_connection_form_relabels_password_as_api_key() -> None:
    (connection,) = get_provider_info()["connection-types"]
    assert connection["connection-type"] == "anthropic_batches"
    assert connection["ui-field-behaviour"]["relabeling"] == {"password": "API Key", "host": "Base URL"}


def test_task_anthropic_batch_resolves_to_the_providers_decorator() -> None:
    from airflow.sdk import task

    from airflow_provider_batches.decorators.anthropic_batch import anthropic_batch_task

    assert task.anthropic_batch is anthropic_batch_task


def test_the_provider_info_imports_nothing_of_airflow() -> None:
    """Airflow reads it while its own configuration is still loading: an Airflow import there is a cycle."""
    code = (
        "import sys, airflow_provider_batches.get_provider_info as info; info.get_provider_info(); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'airflow'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"
