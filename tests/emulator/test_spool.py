"""The incremental parser of create-batch bodies: same answers whatever the chunk boundaries."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from airflow_provider_batches.emulator.apierrors import ApiError
from airflow_provider_batches.emulator.spool import MalformedJson, iter_batch_requests


def _parse(text: str, chunk_size: int = 7) -> list[Any]:
    """Parse with tiny read chunks, so values straddle chunk boundaries."""
    return list(iter_batch_requests(io.BytesIO(text.encode("utf-8")), chunk_size))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 20])
def test_elements_survive_any_chunk_boundary(chunk_size: int) -> None:
    items = [
        {"custom_id": f"r{i}", "params": {"text": "héllo ✓ " * i, "n": 12345.5, "ok": True}} for i in range(5)
    ]
    text = json.dumps({"requests": items}, indent=2, ensure_ascii=False)
    assert _parse(text, chunk_size) == items


def test_empty_requests_array_yields_nothing() -> None:
    assert _parse('{"requests": []}') == []


def test_missing_requests_key_is_field_required() -> None:
    with pytest.raises(ApiError, match="requests: Field required"):
        _parse("{}")


def test_requests_not_a_list_is_400() -> None:
    with pytest.raises(ApiError, match="requests: Input should be a valid list"):
        _parse('{"requests": {"a": 1}}')


def test_top_level_not_an_object_is_400() -> None:
    with pytest.raises(ApiError, match="Input should be a valid dictionary"):
        _parse("[1, 2]")


@pytest.mark.parametrize(
    "text",
    [
        '{"requests": [1,]}',
        '{"requests": [1 2]}',
        '{"requests": [1]',
        '{"requests": [1]} x',
        "",
        '{"requests": [tru',
    ],
)
def test_syntax_errors_are_malformed_json(text: str) -> None:
    with pytest.raises(MalformedJson):
        _parse(text)


def test_numbers_split_across_chunks_are_whole() -> None:
    assert _parse('{"requests": [123456789, 2]}', chunk_size=16) == [123456789, 2]
