"""A local, faithful stand-in for the Anthropic Messages and Message Batches API (see EMULATOR.md).

from airflow_provider_batches.emulator import Emulator, EmulatorConfig

with Emulator(EmulatorConfig(processing_seconds=0)) as emu:
    client = anthropic.Anthropic(api_key=emu.api_key, base_url=emu.base_url)
"""

from __future__ import annotations

from airflow_provider_batches.emulator.cli import main
from airflow_provider_batches.emulator.clock import Clock, ManualClock, SystemClock
from airflow_provider_batches.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from airflow_provider_batches.emulator.server import AdminClient, Emulator

__all__ = [
    "DEFAULT_API_KEY",
    "AdminClient",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "ManualClock",
    "SystemClock",
    "main",
]
