"""Fixtures for the emulator tests: an instant-clock emulator per test, and an SDK client for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import anthropic
import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig, ManualClock
from airflow_provider_batches.testing import anthropic_emulator, anthropic_emulator_config  # noqa: F401
from tests.emulator.helpers import sdk_client

EmulatorFactory = Callable[..., AbstractContextManager[Emulator]]


@pytest.fixture
def make_emulator() -> EmulatorFactory:
    """Build an emulator with config overrides; instant lifecycle and a manual clock unless told otherwise."""

    def factory(clock: ManualClock | None = None, **overrides: Any) -> AbstractContextManager[Emulator]:
        settings: dict[str, Any] = {"processing_seconds": 0, "canceling_seconds": 0, **overrides}
        return Emulator(EmulatorConfig(**settings), clock=clock or ManualClock())

    return factory


@pytest.fixture
def emulator(make_emulator: EmulatorFactory) -> Iterator[Emulator]:
    with make_emulator() as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    with sdk_client(emulator) as sdk:
        yield sdk
