"""batch_window_deadline: a DeadlineAlert for the 24-hour window, or None where Airflow has none."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta

import pytest

from airflow_provider_batches.deadlines import batch_window_deadline, log_missed_batch_window


def test_the_alert_fires_24_hours_and_the_margin_after_the_run_was_queued() -> None:
    from airflow.sdk.definitions.deadline import DeadlineReference

    alert = batch_window_deadline(margin=timedelta(hours=1))

    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval == timedelta(hours=25)


def test_without_deadline_alerts_in_airflow_there_is_no_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow.sdk.definitions.deadline", None)

    assert batch_window_deadline() is None


def test_the_default_callback_warns_naming_the_window(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_batches.deadlines"):
        asyncio.run(log_missed_batch_window())

    assert "24-hour Message Batches window" in caplog.text
