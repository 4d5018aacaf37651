from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import API_KEY, BASE_URL


def set_connection(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    conn = {"conn_type": "anthropic_batches", "host": BASE_URL, "password": API_KEY, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(conn))


@pytest.fixture(autouse=True)
def default_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records retry waits instead of sleeping, for the lost-create tests (the other retry and
    wait policy tests step the plans instead: tests/plans.py)."""
    waited: list[float] = []
    monkeypatch.setattr("airflow_provider_batches.client_core.time.sleep", waited.append)

    async def fake_async_sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr("airflow_provider_batches.client_core.asyncio.sleep", fake_async_sleep)
    return waited
