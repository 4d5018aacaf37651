"""Models parse what the API sends today and whatever it grows into tomorrow."""

from __future__ import annotations

from datetime import timezone

from airflow_provider_batches.models import (
    BatchResult,
    ErroredResult,
    Message,
    MessageBatch,
    SucceededResult,
    TextBlock,
    UnknownBlock,
    UnknownResult,
)
from tests.fakes import batch_json


def test_timestamps_with_z_parse_to_aware_datetimes() -> None:
    batch = MessageBatch.model_validate(batch_json(created_at="2026-11-22T10:00:00Z"))
    assert batch.created_at.tzinfo is not None
    assert batch.created_at.utcoffset() == timezone.utc.utcoffset(None)


def test_timestamps_with_offset_and_microseconds_parse_to_aware_datetimes() -> None:
    batch = MessageBatch.model_validate(batch_json(created_at="2026-11-22T10:00:00.123456+00:00"))
    assert batch.created_at.microsecond == 123456
    assert batch.created_at.tzinfo is not None


def test_unknown_batch_fields_are_kept() -> None:
    batch = MessageBatch.model_validate(batch_json(new_field={"a": 1}))
    assert batch.model_extra == {"new_field": {"a": 1}}


def test_request_counts_total_sums_every_state() -> None:
    batch = MessageBatch.model_validate(batch_json(total=7))
    assert batch.request_counts.total == 7


def test_unknown_content_blocks_parse_and_keep_their_data() -> None:
    message = Message.model_validate(
        {
            "id": "msg_1",
            "model": "claude-emulator-test",
            "content": [
                {"type": "text", "text": "hello "},
                {"type": "web_search_tool_result", "tool_use_id": "t1", "content": []},
                {"type": "text", "text": "world"},
            ],
        }
    )
    assert isinstance(message.content[0], TextBlock)
    assert isinstance(message.content[1], UnknownBlock)
    assert message.content[1].model_extra == {"tool_use_id": "t1", "content": []}
    assert message.text == "hello world"


def test_each_result_type_parses_to_its_model() -> None:
    succeeded = BatchResult.model_validate(
        {
            "custom_id": "a",
            "result": {"type": "succeeded", "message": {"id": "msg_1", "model": "m", "content": []}},
        }
    )
    errored = BatchResult.model_validate(
        {
            "custom_id": "b",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "model"},
                    "request_id": None,
                },
            },
        }
    )
    assert isinstance(succeeded.result, SucceededResult)
    assert isinstance(errored.result, ErroredResult)
    assert errored.result.error.error.type == "not_found_error"


def test_an_unknown_result_type_parses_and_keeps_its_data() -> None:
    line = BatchResult.model_validate({"custom_id": "c", "result": {"type": "deferred", "until": "later"}})
    assert isinstance(line.result, UnknownResult)
    assert line.result.type == "deferred"
    assert line.result.model_extra == {"until": "later"}
