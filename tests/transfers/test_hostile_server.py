"""Server answers are data, not trust: a hostile server (the emulator's hostile mode, over real
sockets) that answers another batch, an id like ``../../x``, odd or foreign custom_ids, repeated or
cut lines, never gets anything written, on ``file://`` or S3."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from airflow.sdk import Context, ObjectStoragePath

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import AnthropicBatchesError, UnexpectedAnswerError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from airflow_provider_batches.transfers._publish import checked_name
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from airflow_provider_batches.transfers.verification import ResultsVerificationError
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.operators.support import requests, running_emulator, task_context

NO_CONTEXT = cast(Context, {})

Store = tuple[ObjectStoragePath, Callable[[], list[str]]]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A destination two folders deep, and every object under its root (to see escapes)."""
    if request.param == "file":
        root = tmp_path / "root"
        root.mkdir()
        destination = ObjectStoragePath(f"file://{root}/a/b/")
        yield destination, lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        return
    s3: S3Endpoint = request.getfixturevalue("s3_endpoint")
    bucket = s3.new_bucket()
    yield ObjectStoragePath(f"s3://{bucket}/a/b/", conn_id=S3_CONN_ID), lambda: s3.keys(bucket)


def job(count: int = 3, task_id: str = "create") -> dict[str, Any]:
    """A finished job on the emulator: the create operator's manifest (with custom_id digests)."""
    operator = AnthropicCreateBatchOperator(task_id=task_id, requests=requests(count), deferrable=False)
    manifest: dict[str, Any] = operator.execute(task_context())
    return manifest


def transfer(batch_id: Any, destination: ObjectStoragePath) -> dict[str, Any]:
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=batch_id, destination=destination, download_retries=0
    )
    result: dict[str, Any] = operator.execute(NO_CONTEXT)
    return result


# -- batch ids --------------------------------------------------------------------------------------


def test_an_answered_dot_dot_id_is_refused_before_anything_is_written(
    emulator: Emulator, store: Store
) -> None:
    destination, objects = store
    manifest = job()
    emulator.admin.set_config(answer_batch_id="../../x")

    with pytest.raises(UnexpectedAnswerError, match=r"not a batch id"):
        transfer(manifest, destination)

    assert objects() == []


def test_another_batch_answered_for_the_one_asked_is_refused(emulator: Emulator, store: Store) -> None:
    destination, objects = store
    mine, other = job(task_id="mine"), job(task_id="other")
    emulator.admin.set_config(answer_batch_id=other["batch_ids"][0])

    with pytest.raises(UnexpectedAnswerError, match="answer is about batch " + other["batch_ids"][0]):
        transfer(mine, destination)

    assert objects() == []


def test_get_and_cancel_refuse_an_answer_about_another_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch, processing_seconds=3600) as emulator:
        hook = AnthropicHook()
        created, other = hook.create_batch(requests(1)), hook.create_batch(requests(1))
        emulator.admin.set_config(answer_batch_id=other.id)

        for call in (hook.get_batch, hook.cancel_batch):
            with pytest.raises(UnexpectedAnswerError, match=f"asked about batch {created.id}"):
                call(created.id)


def test_delete_refuses_an_answer_about_another_batch(emulator: Emulator) -> None:
    hook = AnthropicHook()
    created, other = hook.create_batch(requests(1)), hook.create_batch(requests(1))
    emulator.admin.set_config(answer_batch_id=other.id)

    with pytest.raises(UnexpectedAnswerError, match=f"asked about batch {created.id}"):
        hook.delete_batch(created.id)


@pytest.mark.parametrize("odd", ["../../x", "msgbatch_a/../b", "msgbatch_a b", "msgbatch_a\nb", "..", ""])
def test_odd_ids_in_a_create_answer_or_a_listing_are_refused(emulator: Emulator, odd: str) -> None:
    hook = AnthropicHook()
    hook.create_batch(requests(1))
    emulator.admin.set_config(answer_batch_id=odd)

    with pytest.raises(UnexpectedAnswerError, match="not a batch id"):
        hook.list_batches(limit=5)
    with pytest.raises(UnexpectedAnswerError, match="not a batch id"):
        hook.create_batch(requests(1), watermark=None)


@pytest.mark.parametrize("name", ["../x.jsonl", "a/b.jsonl", "..", ".staging", "x y", "x\n", ""])
def test_an_output_name_that_could_leave_the_prefix_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot name an output"):
        checked_name(name)


# -- result lines -----------------------------------------------------------------------------------


def test_an_odd_custom_id_in_the_results_is_refused_naming_the_line(emulator: Emulator, store: Store) -> None:
    destination, objects = store
    manifest = job()
    emulator.admin.set_config(results_tampering=["odd_custom_id"])

    with pytest.raises(ResultsVerificationError, match=r"line 1 has custom_id '\.\./\.\./x'"):
        transfer(manifest, destination)

    assert objects() == []


@pytest.mark.parametrize("tampering", ["foreign_custom_id", "duplicate", "truncate"])
def test_foreign_repeated_or_cut_results_publish_nothing(
    emulator: Emulator, store: Store, tampering: str
) -> None:
    destination, objects = store
    manifest = job()
    emulator.admin.set_config(results_tampering=[tampering])

    with pytest.raises(ResultsVerificationError, match="nothing was published"):
        transfer(manifest, destination)

    assert objects() == []


def test_reordered_results_are_the_same_results(emulator: Emulator, store: Store) -> None:
    destination, _ = store
    manifest = job(5)
    emulator.admin.set_config(results_tampering=["reorder"])

    written = transfer(manifest, destination)

    assert written["custom_ids"][manifest["batch_ids"][0]]["checked"] is True


def test_plain_ids_say_why_the_custom_ids_were_not_checked(
    emulator: Emulator, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    destination, _ = store
    manifest = job()

    written = transfer(manifest["batch_ids"], destination)

    entry = written["custom_ids"][manifest["batch_ids"][0]]
    assert entry["checked"] is False
    assert "pass batch_id=create.output" in entry["not_checked_because"]
    assert "[warning  ] Batch " + manifest["batch_ids"][0] in capsys.readouterr().out  # the task log


def answering_about_another_batch(emulator: Emulator, answered: str) -> MessageBatch:
    """This test's batch, with the emulator answering every batch object as ``answered`` ("other":
    another real batch's id; else that odd id)."""
    hook = AnthropicHook()
    mine, other = hook.create_batch(requests(1)), hook.create_batch(requests(1))
    emulator.admin.set_config(answer_batch_id=other.id if answered == "other" else answered)
    return mine


# -- waiting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("answered", ["other", "../../x"])
def test_a_wait_in_the_triggerer_ends_in_an_error_event_when_answers_are_about_another_batch(
    monkeypatch: pytest.MonkeyPatch, answered: str
) -> None:
    with running_emulator(monkeypatch, processing_seconds=3600) as emulator:
        mine = answering_about_another_batch(emulator, answered)
        trigger = AnthropicBatchTrigger(batch_ids=[mine.id], deadline=time.time() + 30, poll_interval=0.1)

        async def first_event() -> Any:
            async for event in trigger.run():
                return event.payload

        event = asyncio.run(asyncio.wait_for(first_event(), 30))

    assert event["status"] == "error"
    assert mine.id in event["message"]


@pytest.mark.parametrize("answered", ["other", "../../x"])
def test_a_wait_in_the_worker_fails_when_answers_are_about_another_batch(
    monkeypatch: pytest.MonkeyPatch, answered: str
) -> None:
    with running_emulator(monkeypatch, processing_seconds=3600) as emulator:
        mine = answering_about_another_batch(emulator, answered)
        sensor = AnthropicBatchSensor(task_id="wait", batch_id=mine.id, poke_interval=0.1, timeout=30)

        with pytest.raises(AnthropicBatchesError, match=mine.id):
            sensor.execute(task_context())


def test_reading_results_in_python_refuses_an_odd_custom_id(emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch = hook.get_batch(hook.create_batch(requests(2)).id)
    emulator.admin.set_config(results_tampering=["odd_custom_id"])

    with pytest.raises(UnexpectedAnswerError, match=r"custom_id: .*'\.\./\.\./x'"):
        list(hook.iter_results(batch))


def test_an_error_answer_cannot_inject_lines_or_flood_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import Recorder, error
    from tests.hooks.conftest import set_connection

    set_connection(monkeypatch, extra={"max_retries": 0})
    flood = "bad\nINFO - forged log line\r\n" + "x" * 100_000
    answer = error(400, "invalid_request_error", flood, **{"request-id": "req\nforged"})
    answer_body = answer.json()
    answer_body.pop("request_id")
    hook = AnthropicHook(
        transport=Recorder(httpx.Response(400, json=answer_body, headers=answer.headers)).transport()
    )

    with pytest.raises(AnthropicBatchesError) as raised:
        hook.get_batch("msgbatch_01abc")

    text = str(raised.value)
    assert "\n" not in text
    assert "\r" not in text
    assert len(text) < 2_500
    assert "[request_id=req forged]" in text
