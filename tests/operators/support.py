"""Helpers for the operator, sensor and trigger tests: requests, a minimal task context, emulator counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred  # type: ignore

__all__ = ["AirflowSensorTimeout", "AirflowSkipException", "TaskDeferred"]

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.job_state import RECORD_KEY
from airflow_provider_batches.testing import CONNECTION_ENV_VAR, connection_json

MODEL = "claude-emulator-test"


def request(custom_id: str, text: str = "hello", **params: Any) -> dict[str, Any]:
    """One batch request; ``[emulator:errored]`` (canceled, expired) in ``text`` steers its outcome."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def requests(count: int, text: str = "hello") -> list[dict[str, Any]]:
    return [request(f"req-{index}", text) for index in range(count)]


class FakeTaskStateStore:
    """``context["task_state_store"]`` stand-in: one dict shared by every 'try' that is given it."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))


class FakeTI:
    """The task instance bits the operators use: xcom_push (recorded), and ``max_tries``, which Airflow
    raises on every clear of the task (and leaves alone on a retry)."""

    def __init__(self, max_tries: int = 0) -> None:
        self.xcoms: dict[str, Any] = {}
        self.max_tries = max_tries

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def task_context(store: FakeTaskStateStore | None = None, *, max_tries: int = 0) -> dict[str, Any]:
    """A minimal context for ``operator.execute(context)``; pass the same store to simulate a retry,
    and a higher ``max_tries`` with it to simulate a clear."""
    return {
        "ti": FakeTI(max_tries),
        "task_state_store": store if store is not None else FakeTaskStateStore(),
    }


def recorded_slices(store: FakeTaskStateStore, number: int = 1) -> list[dict[str, Any]]:
    """The slices of round ``number`` as the job record stores them."""
    return list(store.values[RECORD_KEY]["rounds"][number - 1]["slices"])


def batches_created(emulator: Emulator) -> int:
    """How many batches the emulator has created, for every API key."""
    return sum(emulator.admin.stats()["batches_created"].values())


@contextmanager
def running_emulator(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Iterator[Emulator]:
    """An emulator (instant lifecycle unless told otherwise) with ``anthropic_default`` pointing at it."""
    config = EmulatorConfig(**{"processing_seconds": 0, "canceling_seconds": 0, **settings})
    with Emulator(config) as emulator:
        monkeypatch.setenv(CONNECTION_ENV_VAR, connection_json(emulator))
        yield emulator
