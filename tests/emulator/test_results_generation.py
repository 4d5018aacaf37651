"""Result lines of an ended batch: the same bytes for the same requests, whatever path made them.

The golden digests below were computed with the generator as it was before results were made by byte
templates (one ``json.dumps`` of a dict per line): the fast path must not change a single byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import store as store_module
from airflow_provider_batches.emulator.config import EmulatorConfig
from airflow_provider_batches.emulator.lifecycle import request_counts
from airflow_provider_batches.emulator.store import BatchStore

BATCH_ID = "msgbatch_0123456789ABCDEFGHIJabcd"
MODEL = "claude-sonnet-4-6"
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["a", "b"]}, "score": {"type": "integer"}},
    "required": ["label", "score"],
}


def varied_requests() -> list[dict[str, Any]]:
    """Every shape the answers depend on: plain and block content, system, tools, structured output,
    cache_control, markers, an unknown model, non-ASCII and odd whitespace, answers cut at max_tokens."""

    def request(custom_id: str, content: Any = "hello there", **params: Any) -> dict[str, Any]:
        body = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": content}]}
        return {"custom_id": custom_id, "params": {**body, **params}}

    cached_system = [{"type": "text", "text": "long shared context " * 20, "cache_control": {"type": "ephemeral"}}]
    return [
        request("plain"),
        request("unicode", "café — naïve “quoted” ±5 % 日本語 \U0001f600 \\ back\"slash"),
        request("whitespace", "  tabs\tand\nnewlines\r\n  and   runs  \u00a0nbsp\u2028 "),
        request("control", "bell\x07 and nul\x00 and del\x7f"),
        request("blocks", [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]),
        request("system", "with a system prompt", system="You are terse."),
        request("system-list", "x", system=[{"type": "text", "text": "sys"}]),
        request("cut", "a long answer " * 40, max_tokens=3),
        request("tools-unforced", "use a tool maybe", tools=[{"name": "t", "input_schema": SCHEMA}]),
        request("forced-tool", "fill it", tools=[{"name": "t", "input_schema": SCHEMA}],
                tool_choice={"type": "tool", "name": "t"}),
        request("json-schema", "json please", output_config={"format": {"type": "json_schema", "schema": SCHEMA}}),
        request("json-invalid", "[emulator:invalid_output]",
                output_config={"format": {"type": "json_schema", "schema": SCHEMA}}),
        request("cache-1", "first reader", system=cached_system),
        request("cache-2", "second reader", system=cached_system),
        request("errored", "please fail [emulator:errored=overloaded_error]"),
        request("errored-default", "[emulator:errored]"),
        request("canceled", "[emulator:canceled]"),
        request("expired", "[emulator:expired] and some text"),
        request("once", "[emulator:errored_once=api_error] then fine"),
        request("unknown-model", model="claude-does-not-exist"),
        request("assistant-last", [{"type": "text", "text": "q"}],
                messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
        request("metadata", "m", metadata={"user_id": "u-1"}, temperature=0.5, stop_sequences=["x"]),
        *[request(f"bulk-{index:04d}", f"document {index}: " + "word " * (index % 7)) for index in range(40)],
    ]


def pretty_body(requests: list[dict[str, Any]]) -> bytes:
    """The create body as the SDK sends it (``", "`` and ``": "``), one request pretty-printed."""
    items = [json.dumps(item) for item in requests]
    items[3] = json.dumps(requests[3], indent=2)  # newlines between tokens: must still be one line on disk
    return ('{"requests": [' + ", ".join(items) + "]}").encode("utf-8")


def results_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes, *, cancel_at: float | None = None, **config: Any
) -> tuple[bytes, dict[str, int]]:
    """The results file of a batch made from ``body`` with a fixed id, ended (or canceled) on a fixed clock."""
    monkeypatch.setattr(store_module, "new_batch_id", lambda: BATCH_ID)
    settings = EmulatorConfig(processing_seconds=100, canceling_seconds=0, seed=7, **config)
    store = BatchStore(tmp_path / "store")
    try:
        body_path = store.new_body_path()
        body_path.write_bytes(body)
        record = store.create("owner", body_path, settings, now=1000.0)
        if cancel_at is not None:
            store.cancel("owner", BATCH_ID, now=cancel_at)
        store.get("owner", BATCH_ID, now=2000.0)
        path = store.results_file("owner", BATCH_ID, 2000.0, settings).result(timeout=60)
        return path.read_bytes(), request_counts(record)
    finally:
        store.close()


def lines_of(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        yield json.loads(line)


GOLDEN = {
    "ended": "9766dbee344aa3e6904eadf7e41fd03fc1ca85e3dc5fe05e7786fdef67e5c66e",
    "canceled": "5e95fc7a5e844ea85e11239d920418e799bcd240c49cb732dac3f1dbbfba55c1",
    "errored_fraction": "65c15eabaca2f9580269531f9aa015f78e50d4e1136e8d7df33cb7ed5ddd5e9a",
}


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("ended", {}),
        ("canceled", {"cancel_at": 1040.0}),
        ("errored_fraction", {"errored_fraction": 0.3, "errored_type": "overloaded_error"}),
    ],
)
def test_results_are_the_bytes_the_earlier_generator_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, options: dict[str, Any]
) -> None:
    data, _ = results_of(tmp_path, monkeypatch, pretty_body(varied_requests()), **options)
    assert hashlib.sha256(data).hexdigest() == GOLDEN[case]
