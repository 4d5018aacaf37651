"""Progress while waiting: a line per interval in every path (sync wait, deferred trigger with the
shared poller, sensor), with counts per state, elapsed time, round and wave, and no extra API call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from airflow_provider_batches.waiting import WaitProgress, describe_elapsed
from tests.operators.support import requests, running_emulator, task_context

#: Batches take this long to end; polls come every POLL seconds, progress lines every PROGRESS.
PROCESSING = 2.0
POLL = 1.5
PROGRESS = 0.4


@pytest.fixture
def slow_emulator(monkeypatch: pytest.MonkeyPatch) -> Any:
    with running_emulator(monkeypatch, processing_seconds=PROCESSING) as emulator:
        yield emulator


def polls(emulator: Emulator) -> int:
    return sum(emulator.admin.stats()["calls"].get("GET /v1/messages/batches/{id}", {}).values())


def lines(text: str, marker: str) -> list[str]:
    return [line for line in text.splitlines() if marker in line]


def test_a_sync_wait_logs_a_progress_line_every_interval_without_extra_calls(
    slow_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = AnthropicCreateBatchOperator(
        task_id="create",
        requests=requests(3),
        poll_interval=POLL,
        max_poll_interval=POLL,
        progress_interval=PROGRESS,
        deferrable=False,
        check_models=False,
    )

    operator.execute(task_context())

    output = capsys.readouterr().out
    progress = lines(output, "Still waiting (round 1) after")
    assert len(progress) >= int(PROCESSING / PROGRESS) - 1  # one per interval, not one per poll
    assert len(progress) > polls(slow_emulator)  # the lines come from what the polls saw
    # the API's counts: the 3 requests and the batch's proof request
    assert "1 in_progress; requests: 4 processing, 0 succeeded" in progress[0]
    assert lines(output, "Ended (round 1) after") != []
    assert "1 ended; requests: 0 processing, 4 succeeded" in lines(output, "Ended (round 1) after")[0]


def test_a_deferred_wait_logs_a_progress_line_every_interval_in_the_triggers_log(
    slow_emulator: Emulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = AnthropicHook().create_batch(requests(2))
    trigger = AnthropicBatchTrigger(
        batch_ids=[batch.id],
        deadline=1e12,
        poll_interval=POLL,
        max_poll_interval=POLL,
        progress_interval=PROGRESS,
        label="round 1",
    )

    async def run() -> dict[str, Any]:
        return (await asyncio.wait_for(anext(trigger.run()), 30)).payload

    with caplog.at_level(logging.INFO):
        event = asyncio.run(run())

    assert event["status"] == "success"
    text = caplog.text + capsys.readouterr().out
    assert len(lines(text, "Still waiting (round 1) after")) >= int(PROCESSING / PROGRESS) - 1
    assert lines(text, "Ended (round 1) after") != []


def test_a_rebuilt_trigger_keeps_the_progress_settings_and_the_start_of_the_wait() -> None:
    trigger = AnthropicBatchTrigger(
        batch_ids=["msgbatch_a"], deadline=1e12, progress_interval=120, label="round 2", wait_started=1000.0
    )

    _, kwargs = trigger.serialize()

    assert (kwargs["progress_interval"], kwargs["label"], kwargs["wait_started"]) == (
        120.0,
        "round 2",
        1000.0,
    )


def test_a_poking_sensor_logs_progress_once_the_interval_has_passed(
    slow_emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = AnthropicHook().create_batch(requests(1))
    sensor = AnthropicBatchSensor(
        task_id="wait", batch_id=batch.id, poke_interval=0.5, progress_interval=PROGRESS, deferrable=False
    )

    sensor.execute(task_context())

    output = capsys.readouterr().out
    assert lines(output, "Still waiting after") != []
    assert lines(output, "Ended after") != []


def batch(batch_id: str, status: str, **counts: int) -> MessageBatch:
    return MessageBatch.model_validate(
        {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0,
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
                **counts,
            },
            "created_at": "2026-12-04T00:00:00Z",
        }
    )


def test_the_progress_line_gives_counts_per_state_elapsed_time_round_and_wave() -> None:
    progress = WaitProgress(["a", "b", "c"], label="round 2, wave: 3 batch(es) in flight", started=0.0)
    progress.observe(
        {"a": batch("a", "in_progress", processing=5), "b": batch("b", "canceling", succeeded=1)}
    )

    line = progress.describe(3725.0)

    assert line == (
        "Still waiting (round 2, wave: 3 batch(es) in flight) after 1h02m05s: 3 batch(es): 1 canceling, "
        "1 in_progress, 1 not yet seen; requests: 5 processing, 1 succeeded, 0 errored, 0 canceled, 0 expired"
    )


def test_a_line_is_due_once_per_interval_however_late_the_check() -> None:
    progress = WaitProgress(["a"], progress_interval=10, started=0.0)
    log = logging.getLogger("test")

    assert not progress.report_if_due(log, 9.9)
    assert progress.report_if_due(log, 35.0)  # three intervals late: one line, not three
    assert not progress.report_if_due(log, 39.0)
    assert progress.report_if_due(log, 40.0)


def test_no_progress_lines_with_an_interval_of_zero() -> None:
    progress = WaitProgress(["a"], progress_interval=0, started=0.0)

    assert progress.seconds_to_report(5.0) == float("inf")
    assert not progress.report_if_due(logging.getLogger("test"), 1e9)


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (65, "1m05s"), (3600, "1h00m00s")])
def test_elapsed_time_reads_well(seconds: float, text: str) -> None:
    assert describe_elapsed(seconds) == text
