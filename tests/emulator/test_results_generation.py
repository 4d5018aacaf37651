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

from airflow_provider_batches.emulator import spool
from airflow_provider_batches.emulator import store as store_module
from airflow_provider_batches.emulator.answers import REQUEST_DECODER
from airflow_provider_batches.emulator.apierrors import ApiError
from airflow_provider_batches.emulator.config import EmulatorConfig
from airflow_provider_batches.emulator.lifecycle import BatchRecord, request_counts
from airflow_provider_batches.emulator.results import plain_succeeded_line, result_for
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

    cached_system = [
        {"type": "text", "text": "long shared context " * 20, "cache_control": {"type": "ephemeral"}}
    ]
    return [
        request("plain"),
        request("unicode", 'café — naïve “quoted” ±5 % 日本語 \U0001f600 \\ back"slash'),
        request("whitespace", "  tabs\tand\nnewlines\r\n  and   runs  \u00a0nbsp\u2028 "),
        request("control", "bell\x07 and nul\x00 and del\x7f"),
        request("blocks", [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]),
        request("system", "with a system prompt", system="You are terse."),
        request("system-list", "x", system=[{"type": "text", "text": "sys"}]),
        request("cut", "a long answer " * 40, max_tokens=3),
        request("tools-unforced", "use a tool maybe", tools=[{"name": "t", "input_schema": SCHEMA}]),
        request(
            "forced-tool",
            "fill it",
            tools=[{"name": "t", "input_schema": SCHEMA}],
            tool_choice={"type": "tool", "name": "t"},
        ),
        request(
            "json-schema", "json please", output_config={"format": {"type": "json_schema", "schema": SCHEMA}}
        ),
        request(
            "json-invalid",
            "[emulator:invalid_output]",
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        ),
        request("cache-1", "first reader", system=cached_system),
        request("cache-2", "second reader", system=cached_system),
        request("errored", "please fail [emulator:errored=overloaded_error]"),
        request("errored-default", "[emulator:errored]"),
        request("canceled", "[emulator:canceled]"),
        request("expired", "[emulator:expired] and some text"),
        request("once", "[emulator:errored_once=api_error] then fine"),
        request("unknown-model", model="claude-does-not-exist"),
        request(
            "assistant-last",
            [{"type": "text", "text": "q"}],
            messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        ),
        request("metadata", "m", metadata={"user_id": "u-1"}, temperature=0.5, stop_sequences=["x"]),
        *[request(f"bulk-{index:04d}", f"document {index}: " + "word " * (index % 7)) for index in range(40)],
    ]


def pretty_body(requests: list[dict[str, Any]]) -> bytes:
    """The create body as the SDK sends it (``", "`` and ``": "``), one request pretty-printed."""
    items = [json.dumps(item) for item in requests]
    items[3] = json.dumps(requests[3], indent=2)  # newlines between tokens: must still be one line on disk
    return ('{"requests": [' + ", ".join(items) + "]}").encode("utf-8")


def results_of(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    *,
    cancel_at: float | None = None,
    **config: Any,
) -> tuple[bytes, dict[str, int]]:
    """The results of a batch made from ``body`` with a fixed id, ended (or canceled) on a fixed clock."""
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


#: A batch ended as planned, canceled part way (the rest ``canceled``), and with a seeded errored fraction.
CASES = [
    ("ended", {}),
    ("canceled", {"cancel_at": 1040.0}),
    ("errored_fraction", {"errored_fraction": 0.3, "errored_type": "overloaded_error"}),
]
#: Digests of the general generator's bytes (``json.dumps`` of ``result_for``), taken again when the
#: answers gained ``usage.cache_creation`` (the writes by lifetime); the template is held to them.
GOLDEN = {
    "ended": "e2d3fd6277ace67695388c64c17408ed3f0561c2f9571900fc5d23c21539b43a",
    "canceled": "5fbf20f2d243f24f184d5c02ad7fe9623806e14f0698f5a595b4a3e2e0b9cc59",
    "errored_fraction": "d61208c6c24f946b2d96bcdb7fa5d7e0a8f0c39bb7a8b546afba9e500f27e4f4",
}


@pytest.mark.parametrize(("case", "options"), CASES)
def test_results_are_the_bytes_the_earlier_generator_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, options: dict[str, Any]
) -> None:
    data, _ = results_of(tmp_path, monkeypatch, pretty_body(varied_requests()), **options)
    assert hashlib.sha256(data).hexdigest() == GOLDEN[case]


def test_results_are_the_same_bytes_when_the_body_is_handed_back_page_by_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_RELEASE_BYTES", 4096)  # the mapped body released behind the reader
    data, _ = results_of(tmp_path, monkeypatch, pretty_body(varied_requests()))
    assert hashlib.sha256(data).hexdigest() == GOLDEN["ended"]


@pytest.mark.parametrize(("case", "options"), CASES)
def test_results_hold_each_request_once_and_match_the_request_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, options: dict[str, Any]
) -> None:
    requests = varied_requests()
    data, counts = results_of(tmp_path, monkeypatch, pretty_body(requests), **options)
    lines = list(lines_of(data))
    assert sorted(line["custom_id"] for line in lines) == sorted(r["custom_id"] for r in requests)
    by_type = {key: 0 for key in ("succeeded", "errored", "canceled", "expired")}
    for line in lines:
        by_type[line["result"]["type"]] += 1
    assert {"processing": 0, **by_type} == counts


def plain_cases() -> list[dict[str, Any]]:
    """Requests the template answers, floats included (canonical JSON then takes json.dumps)."""
    floats = {"role": "user", "content": [{"type": "text", "text": "x", "weight": 1e16, "w": 1e-05}]}
    return [
        *[
            request
            for request in varied_requests()
            if not {"output_config", "tool_choice"} & request["params"].keys()
            and "cache_control" not in json.dumps(request)
        ],
        {"custom_id": "floats", "params": {"model": MODEL, "max_tokens": 9, "messages": [floats]}},
        {
            "custom_id": "float-tools",
            "params": {
                "model": MODEL,
                "max_tokens": 99,
                "messages": [floats],
                "tools": [{"name": "t", "input_schema": {"maximum": 2.5e20}}],
            },
        },
    ]


@pytest.mark.parametrize("request_", plain_cases(), ids=lambda request: request["custom_id"])
def test_a_plain_answer_from_the_template_is_what_json_dumps_writes_for_its_result(
    request_: dict[str, Any],
) -> None:
    record = BatchRecord(
        id=BATCH_ID,
        seq=1,
        owner="o",
        request_count=1,
        created_at=0.0,
        expires_at=1.0,
        archive_at=2.0,
        processing_seconds=0.0,
        canceling_seconds=0.0,
        plan_seed=0,
        errored_fraction=0.0,
        errored_type="api_error",
        cutoff=1,
        cutoff_outcome="succeeded",
    )
    line = json.dumps(request_).encode()
    decoded = REQUEST_DECODER.decode(line)
    expected = json.dumps(result_for(record, 0, ord("s"), json.loads(line)), ensure_ascii=False)
    assert plain_succeeded_line(BATCH_ID, decoded["custom_id"], decoded["params"]) == expected.encode()


def create_answer(tmp_path: Path, body: bytes) -> tuple[int, str] | int:
    """The 400 a create answers (status, message), or the number of requests of the batch it made."""
    store = BatchStore(tmp_path / "store")
    try:
        body_path = store.new_body_path()
        body_path.write_bytes(body)
        try:
            return store.create("owner", body_path, EmulatorConfig(), now=1000.0).request_count
        except ApiError as exc:
            return exc.status, exc.message
    finally:
        store.close()


ONE = (
    b'{"custom_id":"a","params":{"model":"claude-sonnet-4-6","max_tokens":5,'
    b'"messages":[{"role":"user","content":"hi"}]}}'
)
BODIES_FOR_THE_GENERAL_READER = {
    "nan": ONE.replace(b'"max_tokens":5', b'"max_tokens":5,"metadata":{"x":NaN}'),
    "lone surrogate": ONE.replace(b'"hi"', b'"\\ud800"'),
    "invalid utf-8": ONE.replace(b'"hi"', b'"\xff"'),
    "huge number": ONE.replace(b'"max_tokens":5', b'"max_tokens":5,"metadata":{"x":1e400}'),
    "syntax error": ONE.replace(b'"hi"', b'"hi",'),
}


@pytest.mark.parametrize(
    "body",
    [
        b'{"requests": [' + ONE + b"]}",
        b'{"requests": [' + ONE + b'], "extra": 1}',
        b'{"requests": [' + ONE + b'], "extra": [' + ONE + b"]}",
        b'{"requests": [' + ONE + b'], "requests": [' + ONE + b"]}",
        b'{"requests": [' + ONE + b"]} trailing",
        b'{"requests": []}',
        b'{"requests": {}}',
        b"[" + ONE + b"]",
        b"",
        b'{"requests": [' + ONE + b"," + ONE + b"]}",
        b'{"requests": [' + ONE.replace(b'"a"', b'"a b"') + b"]}",
        *[b'{"requests": [' + body + b"]}" for body in BODIES_FOR_THE_GENERAL_READER.values()],
        *[
            b'{"requests": [' + ONE.replace(b'"a"', b'"z"') + b"," + body + b"]}"
            for body in BODIES_FOR_THE_GENERAL_READER.values()
        ],
    ],
)
def test_a_create_answers_as_the_general_reader_alone_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    answer = create_answer(tmp_path / "fast", body)

    def general_reader_only(raw: Any) -> Any:
        raise spool.NeedsGeneralReader
        yield

    monkeypatch.setattr(store_module, "iter_request_elements", general_reader_only)
    assert answer == create_answer(tmp_path / "general", body)


def test_a_plain_body_is_read_without_the_general_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_general_reader(raw: Any) -> Any:
        raise AssertionError("the general reader read a plain body")

    monkeypatch.setattr(store_module, "iter_batch_requests", no_general_reader)
    assert create_answer(tmp_path, pretty_body(varied_requests())) == len(varied_requests())


def test_a_body_json_accepts_but_msgspec_refuses_still_has_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, counts = results_of(
        tmp_path, monkeypatch, b'{"requests": [' + BODIES_FOR_THE_GENERAL_READER["nan"] + b"]}"
    )
    assert [line["custom_id"] for line in lines_of(data)] == ["a"]
    assert counts["succeeded"] == 1


def test_a_request_that_spells_cache_control_with_an_escape_gets_the_answer_the_general_reader_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create keeps a request's own JSON text; the template path must not take a key written with
    an escape (``cache\\u005fcontrol``) for absent: its results are the earlier generator's."""
    cached_system = [
        {"type": "text", "text": "long shared context " * 20, "cache_control": {"type": "ephemeral"}}
    ]
    item = {
        "custom_id": "cached",
        "params": {
            "model": MODEL,
            "max_tokens": 64,
            "system": cached_system,
            "messages": [{"role": "user", "content": "hello"}],
        },
    }
    body = (
        b'{"requests": [' + json.dumps(item).replace("cache_control", "cache\\u005fcontrol").encode() + b"]}"
    )
    fast, _ = results_of(tmp_path / "fast", monkeypatch, body)

    def general_reader_only(raw: Any) -> Any:
        raise spool.NeedsGeneralReader
        yield

    monkeypatch.setattr(store_module, "iter_request_elements", general_reader_only)
    general, _ = results_of(tmp_path / "general", monkeypatch, body)
    (line,) = lines_of(fast)
    assert line["result"]["message"]["usage"]["cache_creation_input_tokens"] > 0
    assert fast == general
