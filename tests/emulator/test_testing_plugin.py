"""The pytest plugin points the anthropic_default connection at a running emulator, then restores it."""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic
import httpx
import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.testing import CONNECTION_ENV_VAR, emulator_connection


def test_fixture_sets_the_connection_env_var(anthropic_emulator: Emulator) -> None:
    connection = json.loads(os.environ[CONNECTION_ENV_VAR])
    assert connection == {
        "conn_type": "anthropic_batches",
        "host": anthropic_emulator.base_url,
        "password": "sk-ant-emulator-key",
    }


def test_fixture_emulator_serves_the_sdk_with_instant_lifecycle(anthropic_emulator: Emulator) -> None:
    client = anthropic.Anthropic(api_key=anthropic_emulator.api_key, base_url=anthropic_emulator.base_url)
    params: Any = {
        "model": "claude-emulator-test",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_connection_is_restored_and_emulator_stopped_afterwards() -> None:
    before = os.environ.get(CONNECTION_ENV_VAR)
    config = EmulatorConfig(processing_seconds=0)
    with pytest.MonkeyPatch.context() as monkeypatch, emulator_connection(monkeypatch, config) as emulator:
        base_url = emulator.base_url
        assert os.environ[CONNECTION_ENV_VAR] != before
    assert os.environ.get(CONNECTION_ENV_VAR) == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/_emulator/health")
