"""Every AnthropicHook method, sync and async, over real sockets against the running emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_batches import errors
from airflow_provider_batches.bodies import BatchBody
from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import ErroredResult, SucceededResult

MODEL = "claude-sonnet-4-6"


def params(text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def requests(count: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"req-{i}", "params": params(f"question {i}")} for i in range(count)]


# -- sync -----------------------------------------------------------------------------------------


def test_create_message_returns_a_parsed_message(anthropic_emulator: Emulator) -> None:
    message = AnthropicHook().create_message(params("Hello emulator"))
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.text
    assert message.usage.input_tokens > 0


def test_count_tokens_returns_the_input_tokens(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    assert hook.count_tokens(params("a")) < hook.count_tokens(params("a much longer question " * 20))


def test_a_batch_goes_from_create_to_results(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    created = hook.create_batch(requests(3))
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    ended = hook.get_batch(created.id)
    assert ended.is_ended
    assert ended.request_counts.succeeded == 3
    results = list(hook.iter_results(ended))
    assert sorted(r.custom_id for r in results) == ["req-0", "req-1", "req-2"]
    assert all(isinstance(r.result, SucceededResult) for r in results)


def test_raw_results_are_jsonl_bytes_of_every_result(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch = hook.get_batch(hook.create_batch(requests(4)).id)
    raw = b"".join(hook.iter_results_bytes(batch.id))
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert sorted(line["custom_id"] for line in lines) == [f"req-{i}" for i in range(4)]


def test_a_streamed_body_creates_the_same_batch(anthropic_emulator: Emulator) -> None:
    encoded = json.dumps({"requests": requests(2)}).encode()
    body = BatchBody(lambda: iter([encoded[:10], encoded[10:]]), 2)
    batch = AnthropicHook().create_batch(body)
    assert batch.request_counts.total == 2


def test_an_unknown_model_ends_errored_not_found(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch = hook.create_batch([{"custom_id": "x", "params": {**params(), "model": "gpt-unknown"}}])
    (result,) = list(hook.iter_results(batch.id))
    assert isinstance(result.result, ErroredResult)
    assert result.result.error.error.type == "not_found_error"


def test_list_and_iterate_batches_newest_first(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    created = [hook.create_batch(requests(1)).id for _ in range(5)]
    page = hook.list_batches(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2]
    assert page.has_more
    assert [b.id for b in hook.iter_batches(page_size=2)] == created[::-1]


def test_cancel_then_delete(anthropic_emulator: Emulator) -> None:
    anthropic_emulator.admin.set_config(processing_seconds=3600)
    hook = AnthropicHook()
    batch = hook.create_batch(requests(2))
    canceling = hook.cancel_batch(batch.id)
    assert canceling.processing_status in ("canceling", "ended")
    assert canceling.cancel_initiated_at is not None
    ended = hook.get_batch(batch.id)
    assert ended.request_counts.canceled == 2
    assert hook.delete_batch(batch.id).id == batch.id
    with pytest.raises(errors.NotFoundError):
        hook.get_batch(batch.id)


def test_delete_while_in_progress_is_an_invalid_request(anthropic_emulator: Emulator) -> None:
    anthropic_emulator.admin.set_config(processing_seconds=3600)
    hook = AnthropicHook()
    batch = hook.create_batch(requests(1))
    with pytest.raises(errors.InvalidRequestError, match="only ended batches can be deleted"):
        hook.delete_batch(batch.id)


def test_beta_calls_reach_the_api_with_the_beta_header(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook(betas=["message-batches-2024-09-24"])
    batch = hook.create_batch(requests(1))
    assert hook.get_batch(batch.id).id == batch.id
    assert "message-batches-2024-09-24" in anthropic_emulator.admin.stats()["betas_seen"]


def test_a_wrong_key_fails_with_the_fix_named(
    anthropic_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = {
        "conn_type": "anthropic_batches",
        "host": anthropic_emulator.base_url,
        "password": "sk-wrong",
    }
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(connection))
    ok, message = AnthropicHook().test_connection()
    assert not ok
    assert "check the API key" in message
    assert "sk-wrong" not in message


def test_test_connection_succeeds_against_the_emulator(anthropic_emulator: Emulator) -> None:
    assert AnthropicHook().test_connection() == (
        True,
        f"Connected to {anthropic_emulator.base_url}: the API key was accepted.",
    )


def test_overload_answers_are_retried_to_success(anthropic_emulator: Emulator) -> None:
    anthropic_emulator.admin.set_config(next_faults=["529", "500"], retry_after_ms=10)
    assert AnthropicHook().list_batches(limit=1).data == []


def test_a_cut_results_stream_raises_a_connection_error(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch = hook.get_batch(hook.create_batch(requests(20)).id)
    anthropic_emulator.admin.set_config(cut_results_after_bytes=500)
    with pytest.raises(errors.APIConnectionError, match="broke off"):
        list(hook.iter_results(batch))


# -- async ----------------------------------------------------------------------------------------


async def test_async_methods_cover_the_batch_lifecycle(anthropic_emulator: Emulator) -> None:
    hook = AnthropicHook()
    try:
        message = await hook.acreate_message(params())
        assert message.text
        assert await hook.acount_tokens(params()) > 0
        created = await hook.acreate_batch(requests(2))
        ended = await hook.aget_batch(created.id)
        assert ended.request_counts.succeeded == 2
        results = [r async for r in hook.aiter_results(ended)]
        assert sorted(r.custom_id for r in results) == ["req-0", "req-1"]
        raw = b"".join([chunk async for chunk in hook.aiter_results_bytes(created.id)])
        assert raw.count(b"\n") >= 1
        page = await hook.alist_batches(limit=10)
        assert [b.id for b in page.data] == [created.id]
        assert [b.id async for b in hook.aiter_batches(page_size=1)] == [created.id]
        assert (await hook.adelete_batch(created.id)).id == created.id
    finally:
        await hook.aclose()


async def test_async_cancel_moves_the_batch_to_canceling(anthropic_emulator: Emulator) -> None:
    anthropic_emulator.admin.set_config(processing_seconds=3600, canceling_seconds=3600)
    hook = AnthropicHook()
    try:
        batch = await hook.acreate_batch(requests(1))
        assert (await hook.acancel_batch(batch.id)).processing_status == "canceling"
    finally:
        await hook.aclose()


async def test_async_streamed_body_creates_a_batch(anthropic_emulator: Emulator) -> None:
    encoded = json.dumps({"requests": requests(3)}).encode()
    hook = AnthropicHook()
    try:
        batch = await hook.acreate_batch(BatchBody(lambda: [encoded], 3))
        assert batch.request_counts.total == 3
    finally:
        await hook.aclose()
