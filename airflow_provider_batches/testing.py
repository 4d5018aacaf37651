"""Pytest plugin for users' own DAG tests: an ``anthropic_emulator`` fixture.

The fixture starts the bundled emulator (instant lifecycle), points the ``anthropic_default`` Airflow
connection at it through ``AIRFLOW_CONN_ANTHROPIC_DEFAULT``, yields the running ``Emulator``
(``.base_url``, ``.api_key``, ``.admin``, ``.clock``) and restores everything afterwards.

Override ``anthropic_emulator_config`` in a conftest to change the emulator's settings.
Importing this module only defines fixtures: no side effects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig

CONNECTION_ENV_VAR = "AIRFLOW_CONN_ANTHROPIC_DEFAULT"
CONNECTION_TYPE = "anthropic_batches"


def connection_json(emulator: Emulator) -> str:
    """The Airflow connection (JSON form) that reaches ``emulator``."""
    return json.dumps({"conn_type": CONNECTION_TYPE, "host": emulator.base_url, "password": emulator.api_key})


@contextmanager
def emulator_connection(monkeypatch: pytest.MonkeyPatch, config: EmulatorConfig) -> Iterator[Emulator]:
    """Run an emulator and point ``anthropic_default`` at it until the block ends."""
    with Emulator(config) as emulator:
        monkeypatch.setenv(CONNECTION_ENV_VAR, connection_json(emulator))
        try:
            yield emulator
        finally:
            monkeypatch.delenv(CONNECTION_ENV_VAR, raising=False)


@pytest.fixture
def anthropic_emulator_config() -> EmulatorConfig:
    """Settings for ``anthropic_emulator``: instant lifecycle. Override this fixture to change them."""
    return EmulatorConfig(processing_seconds=0, canceling_seconds=0)


@pytest.fixture
def anthropic_emulator(
    monkeypatch: pytest.MonkeyPatch, anthropic_emulator_config: EmulatorConfig
) -> Iterator[Emulator]:
    """A running emulator with ``anthropic_default`` pointing at it (restored afterwards)."""
    with emulator_connection(monkeypatch, anthropic_emulator_config) as emulator:
        yield emulator
