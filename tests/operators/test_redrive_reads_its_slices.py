"""A re-drive round reads only the first round's batches that hold its requests, by the offsets on the
job record, and still refuses an input edited since round 1 before any create."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import IO, Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import InputChangedError
from airflow_provider_batches.job_state import RECORD_KEY
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.redrive import Redrive
from airflow_provider_batches.requests import RequestSource
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import (
    FakeTaskStateStore,
    TaskDeferred,
    batches_created,
    recorded_slices,
    request,
    task_context,
)

TRANSIENT = "[emulator:errored_once=overloaded_error]"


class Counter:
    bytes = 0


class CountedStream:
    """A source's stream that counts the bytes read from it."""

    def __init__(self, stream: IO[bytes], counter: Counter) -> None:
        self._stream = stream
        self._counter = counter

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._counter.bytes += len(data)
        return data

    def seek(self, offset: int) -> int:
        return self._stream.seek(offset)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> CountedStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter = Counter()
    opened = RequestSource._open

    def counted(self: RequestSource) -> Any:
        return CountedStream(opened(self), counter)

    monkeypatch.setattr(RequestSource, "_open", counted)
    return counter


def write_input(path: Path, count: int, failing: set[int], edited: int | None = None) -> None:
    """``count`` requests ``r<i>``; those in ``failing`` fail once, retryably; ``edited`` is changed."""
    with path.open("w") as out:
        for index in range(count):
            text = f"question {index}" + (f" {TRANSIENT}" if index in failing else "")
            text += " (edited)" if index == edited else ""
            out.write(json.dumps(request(f"r{index}", text), separators=(",", ":")) + "\n")


def operator(path: Path, per_batch: int) -> AnthropicCreateBatchOperator:
    return AnthropicCreateBatchOperator(
        task_id="create",
        requests_path=str(path),
        max_requests_per_batch=per_batch,
        redrive=Redrive(),
        deferrable=True,
    )


def round_1(path: Path, per_batch: int, store: FakeTaskStateStore) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round 1 created and ended: the deferral's kwargs and the trigger's event."""
    with pytest.raises(TaskDeferred) as deferred:
        operator(path, per_batch).execute(task_context(store))
    trigger = deferred.value.trigger
    assert isinstance(trigger, AnthropicBatchTrigger)
    (event,) = asyncio.run(_events(trigger))
    return deferred.value.kwargs or {}, event


async def _events(trigger: AnthropicBatchTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def span_bytes(record: dict[str, Any], size: int, index: int) -> int:
    slices = record["rounds"][0]["slices"]
    end = slices[index + 1]["offset"] if index + 1 < len(slices) else size
    return int(end - slices[index]["offset"])


@pytest.mark.usefixtures("emulator")
def test_a_redrive_of_3_failed_ids_in_50k_requests_reads_only_their_batches(
    tmp_path: Path, read: Counter
) -> None:
    path = tmp_path / "requests.jsonl"
    failing = {3_004, 17_500, 42_999}  # in batches 3, 17 and 42 of 50
    write_input(path, 50_000, failing)
    store = FakeTaskStateStore()
    kwargs, event = round_1(path, 1_000, store)
    record = store.values[RECORD_KEY]
    assert [part["offset"] is not None for part in record["rounds"][0]["slices"]] == [True] * 50
    read.bytes = 0

    with pytest.raises(TaskDeferred):  # round 2 created, now waited on
        operator(path, 1_000).execute_complete(task_context(store), event=event, **kwargs)

    record = store.values[RECORD_KEY]
    (_, round_2) = record["rounds"]
    assert round_2["request_count"] == 3
    assert [part["origins"] for part in round_2["slices"]] == [[3, 17, 42]]
    size = path.stat().st_size
    needed = sum(span_bytes(record, size, index) for index in (3, 17, 42))
    assert read.bytes <= 2 * needed  # checked once, then the round's body: nothing else
    assert read.bytes < size * 0.13  # 3 of 50 batches, twice: 12 % of the input


def test_a_redrive_after_the_input_was_edited_fails_before_any_create(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path, 2_000, {150, 1_250})
    store = FakeTaskStateStore()
    kwargs, event = round_1(path, 100, store)
    write_input(path, 2_000, {150, 1_250}, edited=1_201)  # beside a failed request, in its batch

    with pytest.raises(InputChangedError, match="round 2 was not sent"):
        operator(path, 100).execute_complete(task_context(store), event=event, **kwargs)

    assert batches_created(emulator) == 20
    assert [round_["kind"] for round_ in store.values[RECORD_KEY]["rounds"]] == ["first"]


def test_a_record_of_an_earlier_version_without_offsets_still_redrives(
    tmp_path: Path, emulator: Emulator, read: Counter
) -> None:
    path = tmp_path / "requests.jsonl"
    write_input(path, 500, {7, 420})
    store = FakeTaskStateStore()
    kwargs, event = round_1(path, 100, store)
    for part in recorded_slices(store):
        del part["offset"], part["first_line"]  # as an earlier version wrote it
    read.bytes = 0

    with pytest.raises(TaskDeferred):
        operator(path, 100).execute_complete(task_context(store), event=event, **kwargs)

    (_, round_2) = store.values[RECORD_KEY]["rounds"]
    assert round_2["request_count"] == 2
    assert batches_created(emulator) == 5 + 1
    assert read.bytes >= 2 * path.stat().st_size  # the whole input, as before
