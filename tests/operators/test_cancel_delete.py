"""AnthropicCancelBatchOperator and AnthropicDeleteBatchOperator: idempotent, clear errors otherwise."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import AuthenticationError, BatchNotReadyError, NotFoundError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import (
    AnthropicCancelBatchOperator,
    AnthropicDeleteBatchOperator,
)
from tests.operators.support import requests, running_emulator, task_context


@pytest.fixture
def slow_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """Batches stay in progress for ten minutes; a cancel ends them at once."""
    with running_emulator(monkeypatch, processing_seconds=600, canceling_seconds=0) as emu:
        yield emu


def cancel(batch_id: object, **kwargs: object) -> AnthropicCancelBatchOperator:
    return AnthropicCancelBatchOperator(task_id="cancel", batch_id=batch_id, poll_interval=0.05, **kwargs)


def delete(batch_id: object, **kwargs: object) -> AnthropicDeleteBatchOperator:
    return AnthropicDeleteBatchOperator(task_id="delete", batch_id=batch_id, poll_interval=0.05, **kwargs)


def test_cancel_cancels_a_running_batch(slow_emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(2))

    cancel(batch.id).execute(task_context())

    assert AnthropicHook().get_batch(batch.id).cancel_initiated_at is not None


def test_cancel_takes_the_create_operators_manifest_and_can_wait(slow_emulator: Emulator) -> None:
    first, second = AnthropicHook().create_batch(requests(1)), AnthropicHook().create_batch(requests(2))

    result = cancel(
        {"batch_ids": [first.id, second.id], "request_count": 3}, wait_for_completion=True
    ).execute(task_context())

    assert result["request_counts"]["canceled"] == 3


def test_cancel_of_an_ended_or_deleted_batch_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch):
        hook = AnthropicHook()
        ended = hook.create_batch(requests(1))
        hook.get_batch(ended.id)  # the instant emulator ends a batch on its first read
        deleted = hook.create_batch(requests(1))
        hook.get_batch(deleted.id)
        hook.delete_batch(deleted.id)

        result = cancel([ended.id, deleted.id]).execute(task_context())

        assert result["batch_ids"] == [ended.id, deleted.id]
        assert hook.get_batch(ended.id).cancel_initiated_at is None


def test_cancel_twice_is_harmless(slow_emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(1))
    cancel(batch.id).execute(task_context())
    canceled = AnthropicHook().get_batch(batch.id)

    assert cancel(batch.id).execute(task_context()) == {"batch_ids": [batch.id]}

    again = AnthropicHook().get_batch(batch.id)
    assert again.cancel_initiated_at == canceled.cancel_initiated_at is not None
    assert again.request_counts.canceled == 1


def test_cancel_with_a_bad_key_is_a_clear_error(
    slow_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropic_batches", "host": slow_emulator.base_url, "password": "sk-wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(conn))

    with pytest.raises(AuthenticationError, match="check the API key"):
        cancel("msgbatch_1").execute(task_context())


def test_delete_deletes_an_ended_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch):
        batch = AnthropicHook().create_batch(requests(1))
        AnthropicHook().get_batch(batch.id)

        result = delete(batch.id).execute(task_context())

        assert result["deleted"] == [batch.id]
        with pytest.raises(NotFoundError):
            AnthropicHook().get_batch(batch.id)


def test_delete_of_an_already_deleted_batch_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(monkeypatch):
        batch = AnthropicHook().create_batch(requests(1))
        AnthropicHook().get_batch(batch.id)
        delete(batch.id).execute(task_context())

        assert delete(batch.id).execute(task_context())["deleted"] == []


def test_delete_of_a_running_batch_fails_and_names_the_fix(slow_emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(1))

    with pytest.raises(BatchNotReadyError, match="cancel_if_running=True"):
        delete(batch.id).execute(task_context())

    assert AnthropicHook().get_batch(batch.id).processing_status == "in_progress"


def test_delete_with_cancel_if_running_cancels_waits_and_deletes(slow_emulator: Emulator) -> None:
    batch = AnthropicHook().create_batch(requests(1))

    result = delete(batch.id, cancel_if_running=True).execute(task_context())

    assert result["deleted"] == [batch.id]
