"""Request sources: validation before any call, streaming encoding, splitting within the limits."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.requests import RequestSource, prepare_job


def request(custom_id: str = "r1", **params: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    base.update(params)
    return {"custom_id": custom_id, "params": {k: v for k, v in base.items() if v is not None}}


def write_jsonl(path: Path, lines: list[Any]) -> str:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def body_of(job: Any, index: int = 0) -> dict[str, Any]:
    return json.loads(b"".join(job.body(job.slices[index]).chunks()))  # type: ignore[no-any-return]


def invalid(source: RequestSource) -> str:
    with pytest.raises(RequestValidationError) as raised:
        prepare_job(source)
    return str(raised.value)


# -- sources --------------------------------------------------------------------------------------


def test_inline_and_path_together_are_refused() -> None:
    with pytest.raises(RequestValidationError, match="either requests or requests_path"):
        RequestSource(requests=[request()], requests_path="/tmp/x.jsonl")


def test_no_source_at_all_is_refused() -> None:
    with pytest.raises(RequestValidationError, match="no requests"):
        RequestSource()


def test_a_path_that_rendered_to_nothing_is_refused() -> None:
    with pytest.raises(RequestValidationError, match="requests_path rendered to '  '"):
        RequestSource(requests_path="  ")


def test_a_dict_instead_of_a_list_is_refused() -> None:
    with pytest.raises(RequestValidationError, match="must be a list"):
        RequestSource(requests=request())  # type: ignore[arg-type]


def test_an_unreadable_path_names_the_path(tmp_path: Path) -> None:
    assert "cannot be read" in invalid(RequestSource(requests_path=str(tmp_path / "missing.jsonl")))


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert "the input is empty" in invalid(RequestSource(requests_path=str(path)))


def test_a_file_uri_and_a_bare_path_read_the_same(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [request("a"), request("b")])
    bare = prepare_job(RequestSource(requests_path=path))
    uri = prepare_job(RequestSource(requests_path=f"file://{path}"))
    assert (
        (bare.request_count, bare.fingerprint)
        == (uri.request_count, uri.fingerprint)
        == (2, bare.fingerprint)
    )


def test_gzip_files_are_decompressed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(request("a")).encode() + b"\n"))
    assert prepare_job(RequestSource(requests_path=str(path))).request_count == 1


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: is not valid JSON"),
        ("[1, 2]", "line 1: must be a JSON object"),
        (json.dumps({"params": request()["params"]}), "custom_id is missing"),
        (json.dumps(request("bad id!")), "custom_id 'bad id!' is invalid"),
        (json.dumps(request("x" * 65)), "use 1 to 64 letters"),
        (json.dumps({"custom_id": "a"}), "params is missing"),
        (json.dumps({"custom_id": "a", "params": "hi"}), "params must be an object"),
        (json.dumps(request(model=None)), "params.model is missing"),
        (json.dumps(request(max_tokens=None)), "params.max_tokens is missing"),
        (json.dumps(request(max_tokens=0)), "params.max_tokens must be an integer from 1 to 1,000,000"),
        (json.dumps(request(max_tokens="10")), "params.max_tokens must be an integer from 1 to 1,000,000"),
        (json.dumps(request(stream=True)), "params.stream must be false, got True (a batch cannot stream"),
        (json.dumps(request(messages=[])), "params.messages must be a non-empty list"),
        (json.dumps(request(messages=[{"role": "tool", "content": "x"}])), "params.messages.0.role"),
        (json.dumps(request(messages=[{"role": "user", "content": 3}])), "params.messages.0.content"),
        (json.dumps({**request(), "extra": 1}), "unknown key(s) 'extra'"),
    ],
)
def test_each_rule_names_the_line_and_the_problem(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(line + "\n")
    assert message in invalid(RequestSource(requests_path=str(path)))


def test_duplicate_custom_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [request("a"), request("b"), request("a")])
    assert "line 3 (custom_id 'a'): custom_id duplicates the one at line 1" in invalid(
        RequestSource(requests_path=path)
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [request("ok"), "{", request("b", stream=True), request("c!")])
    message = invalid(RequestSource(requests_path=path))
    assert "3 invalid request(s)" in message
    assert all(f"line {n}" in message for n in (2, 3, 4))


def test_long_problem_lists_are_cut_with_a_count(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", ["{"] * 50)
    message = invalid(RequestSource(requests_path=path))
    assert "50 invalid request(s)" in message
    assert "and 30 more" in message


def test_inline_requests_are_located_by_index() -> None:
    assert "requests[1] (custom_id 'b')" in invalid(
        RequestSource(requests=[request("a"), request("b", max_tokens=0)])
    )


def test_the_default_model_fills_requests_without_one() -> None:
    job = prepare_job(
        RequestSource(requests=[request("a", model=None), request("b", model="own")], model="dflt")
    )
    assert [r["params"]["model"] for r in body_of(job)["requests"]] == ["dflt", "own"]
    assert job.requests_per_model == {"dflt": 1, "own": 1}


def test_a_request_over_the_byte_limit_is_refused() -> None:
    big = request("a", messages=[{"role": "user", "content": "x" * 2000}])
    with pytest.raises(RequestValidationError, match="over the 1,000-byte batch limit"):
        prepare_job(RequestSource(requests=[big]), max_bytes=1000)


# -- encoding and splitting -----------------------------------------------------------------------


def test_a_file_line_with_its_own_model_is_sent_byte_for_byte(tmp_path: Path) -> None:
    line = (
        '{"custom_id": "a",   "params": {"model": "m", "max_tokens": 5, '
        '"messages": [{"role": "user", "content": "é"}]}}'
    )
    path = tmp_path / "r.jsonl"
    path.write_text(line + "\r\n")
    job = prepare_job(RequestSource(requests_path=str(path)))
    assert b"".join(job.body(job.slices[0]).chunks()) == b'{"requests":[' + line.encode() + b"]}"


def test_jobs_over_the_request_limit_split_into_batches() -> None:
    job = prepare_job(RequestSource(requests=[request(f"r{i}") for i in range(7)]), max_requests=3)
    assert [(s.start, s.count) for s in job.slices] == [(0, 3), (3, 3), (6, 1)]
    assert [r["custom_id"] for r in body_of(job, 1)["requests"]] == ["r3", "r4", "r5"]


def test_jobs_over_the_byte_limit_split_and_each_body_fits() -> None:
    requests = [request(f"r{i}", messages=[{"role": "user", "content": "x" * 100}]) for i in range(20)]
    job = prepare_job(RequestSource(requests=requests), max_bytes=1000)
    assert len(job.slices) > 1
    assert sum(s.count for s in job.slices) == 20
    for batch_slice in job.slices:
        body = b"".join(job.body(batch_slice).chunks())
        assert len(body) == batch_slice.size <= 1000


def test_the_fingerprint_changes_with_the_input_and_only_then() -> None:
    first = prepare_job(RequestSource(requests=[request("a")]))
    same = prepare_job(RequestSource(requests=[request("a")]))
    other = prepare_job(RequestSource(requests=[request("a", max_tokens=17)]))
    assert first.fingerprint == same.fingerprint != other.fingerprint


def test_a_file_changed_after_validation_is_never_submitted_whole(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [request("a"), request("b")])
    job = prepare_job(RequestSource(requests_path=path))
    write_jsonl(tmp_path / "r.jsonl", [request("a"), request("c")])
    chunks = job.body(job.slices[0]).chunks()
    with pytest.raises(RequestValidationError, match="changed after it was validated"):
        b"".join(chunks)


def test_iter_requests_streams_validated_requests(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [request("a", model=None)])
    assert [r["params"]["model"] for r in RequestSource(requests_path=path, model="m").iter_requests()] == [
        "m"
    ]


def test_a_file_mixing_own_and_default_models_sends_each_line_right(tmp_path: Path) -> None:
    own = json.dumps(request("a", model="own")).replace(",", ", ")  # not compact: sent byte for byte
    path = write_jsonl(tmp_path / "r.jsonl", [own, request("b", model=None), own.replace('"a"', '"c"')])
    job = prepare_job(RequestSource(requests_path=path, model="dflt"))
    body = b"".join(job.body(job.slices[0]).chunks())
    assert body.startswith(b'{"requests":[' + own.encode() + b",")
    assert [r["params"]["model"] for r in json.loads(body)["requests"]] == ["own", "dflt", "own"]


# -- inputs that used to get through --------------------------------------------------------------


def problems_of(tmp_path: Path, *lines: str | bytes) -> str:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return invalid(RequestSource(requests_path=str(path)))


def test_a_byte_order_mark_is_refused_with_the_fix(tmp_path: Path) -> None:
    message = problems_of(tmp_path, b"\xef\xbb\xbf" + json.dumps(request("a")).encode())
    assert "line 1 (custom_id 'a'): starts with a UTF-8 byte order mark" in message
    assert "save it as UTF-8 without BOM" in message


def test_a_custom_id_must_match_whole_so_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    assert "custom_id 'abc\\n' is invalid" in problems_of(tmp_path, json.dumps(request("abc\n")))


@pytest.mark.parametrize(
    "line",
    [
        '{"custom_id":"bad id!","custom_id":"okid","params":{"model":"m","max_tokens":5,'
        '"messages":[{"role":"user","content":"x"}]}}',
        '{"custom_id":"okid","params":{"model":"m","max_tokens":0,"max_tokens":5,'
        '"messages":[{"role":"user","content":"x"}]}}',
        '{"custom_id" : "okid", "params": {"model": "m", "max_tokens" : 0, "max_tokens": 5, '
        '"messages": [{"role": "user", "content": "x"}]}}',
    ],
    ids=["custom_id twice", "max_tokens twice", "spaced keys twice"],
)
def test_a_key_given_twice_in_one_object_is_refused(tmp_path: Path, line: str) -> None:
    assert "twice in one object: keep one" in problems_of(tmp_path, line)


def test_a_compact_line_is_proven_free_of_repeated_keys_without_the_strict_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line equal to the re-encoding of its value holds no key twice: the slow reading is skipped."""
    from airflow_provider_batches.requests import validation as requests_module

    def never(raw: bytes) -> Any:
        raise AssertionError(f"read strictly: {raw[:40]!r}")

    monkeypatch.setattr(requests_module, "_parse_strictly", never)
    line = json.dumps(request("a"), separators=(",", ":"), ensure_ascii=False)
    path = write_jsonl(tmp_path / "r.jsonl", [line])
    assert prepare_job(RequestSource(requests_path=path)).request_count == 1


@pytest.mark.parametrize("form", ["bare", "file://", "file:// relative", "file://~"])
def test_a_local_file_is_read_alike_in_every_form_without_object_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """Local paths skip ObjectStoragePath (whose first use imports every provider's filesystems)
    but resolve as it does: a relative ``file://`` from the working directory, ``~`` as home."""
    import airflow.sdk

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ObjectStoragePath used for a local file")

    monkeypatch.setattr(airflow.sdk, "ObjectStoragePath", refused)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    path = write_jsonl(tmp_path / "r.jsonl", [request("a"), request("b")])
    given = {
        "bare": path,
        "file://": f"file://{path}",
        "file:// relative": "file://r.jsonl",
        "file://~": "file://~/r.jsonl",
    }[form]
    assert prepare_job(RequestSource(requests_path=given)).request_count == 2


def test_keys_that_merely_look_alike_in_text_are_not_duplicates(tmp_path: Path) -> None:
    text = 'he said "a": 1, \\"b\\" : 2'
    path = write_jsonl(tmp_path / "r.jsonl", [request("a", messages=[{"role": "user", "content": text}])])
    assert prepare_job(RequestSource(requests_path=path)).request_count == 1


def test_an_absurd_max_tokens_is_refused_naming_the_cap(tmp_path: Path) -> None:
    message = problems_of(tmp_path, json.dumps(request("a", max_tokens=10**20)))
    assert "params.max_tokens must be an integer from 1 to 1,000,000, got 100000000000000000000" in message


def test_deep_nesting_is_refused_per_line_not_with_a_recursion_error(tmp_path: Path) -> None:
    deep = json.dumps(request("a")).replace('"hi"', "[" * 5000 + "]" * 5000)
    message = problems_of(tmp_path, json.dumps(request("ok")), deep)
    assert "line 2 (custom_id 'a'): is nested more than 500 levels deep" in message


def test_nesting_just_over_the_limit_is_refused_by_path() -> None:
    deep: Any = "x"
    for _ in range(501):
        deep = [deep]
    message = invalid(RequestSource(requests=[request("a", metadata={"user_id": deep})]))
    assert "requests[0] (custom_id 'a'): params.metadata.user_id" in message
    assert "nested more than 500 levels deep" in message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (__import__("datetime").datetime(2026, 1, 1), "is a datetime, which is not JSON"),
        ({"a", "b"}, "is a set, which is not JSON"),
        (b"bytes", "is a bytes, which is not JSON"),
        (float("nan"), "is nan, which is not a JSON number"),
        (float("inf"), "is inf, which is not a JSON number"),
        ("lone \ud800", "holds a lone surrogate"),
    ],
    ids=["datetime", "set", "bytes", "nan", "inf", "lone surrogate"],
)
def test_inline_values_json_cannot_carry_are_named_by_request_and_path(value: Any, words: str) -> None:
    requests = [request("a"), request("b", metadata={"user_id": "u", "when": [1, value]})]
    message = invalid(RequestSource(requests=requests))
    assert f"requests[1] (custom_id 'b'): params.metadata.when.1 {words}" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('"temperature": 1e400', "params.temperature is inf, which is not a JSON number"),
        ('"temperature": NaN', "is not valid JSON (NaN is not a JSON number"),
        ('"system": "\\ud800"', "params.system holds a lone surrogate"),
    ],
    ids=["1e400", "NaN", "lone surrogate"],
)
def test_file_values_json_cannot_carry_are_named_by_line_and_path(
    tmp_path: Path, text: str, words: str
) -> None:
    line = json.dumps(request("a")).replace('"max_tokens": 16', f'"max_tokens": 16, {text}')
    assert f"line 1 (custom_id 'a'): {words}" in problems_of(tmp_path, line)


def test_an_over_long_line_is_refused_while_streaming_with_its_custom_id(tmp_path: Path) -> None:
    long_line = json.dumps(request("long", messages=[{"role": "user", "content": "x" * 5000}]))
    path = write_jsonl(tmp_path / "r.jsonl", [request("a"), long_line, request("b")])
    with pytest.raises(RequestValidationError) as raised:
        prepare_job(RequestSource(requests_path=path), max_bytes=1000)
    assert "line 2 (custom_id 'long'): is longer than the 473 bytes" in str(raised.value)
    assert (
        "in a 1,000-byte batch (less 512 bytes kept for the batch's proof request): split or shorten it "
        "(the file was not read further)" in str(raised.value)
    )


def test_memory_for_an_over_long_line_is_bounded_by_the_limit_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with path.open("wb") as out:
        out.write(json.dumps(request("a")).encode() + b"\n" + b'{"custom_id": "long", "text": "')
        for _ in range(64):
            out.write(b"x" * (1 << 20))
        out.write(b'"}\n')
    prepare_job(RequestSource(requests_path=write_jsonl(tmp_path / "warm.jsonl", [request("a")])))  # imports
    tracemalloc.start()
    try:
        with pytest.raises(
            RequestValidationError, match="line 2 .custom_id 'long'.: is longer than the 3,999,473 bytes"
        ):
            prepare_job(RequestSource(requests_path=str(path)), max_bytes=4_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12_000_000, f"a 64 MB line under a 4 MB limit peaked at {peak:,} bytes"


def test_an_over_long_line_is_never_held_whole_and_ends_the_reading(tmp_path: Path) -> None:
    from airflow_provider_batches.requests.reading import READ_CHUNK_BYTES, read_lines

    path = tmp_path / "r.jsonl"
    path.write_bytes(b"a\n" + b"x" * (5 * READ_CHUNK_BYTES) + b"\nb")
    with path.open("rb") as stream:
        lines = list(read_lines(stream, 2 * READ_CHUNK_BYTES))
        assert stream.tell() <= 4 * READ_CHUNK_BYTES  # not read to the line's end
    assert [size for _, size, _, _ in lines[:1]] == [1]
    assert 2 * READ_CHUNK_BYTES < lines[1][1] <= 3 * READ_CHUNK_BYTES  # refused once past the limit
    assert [start for _, _, start, _ in lines] == [0, 2]
    assert len(lines[1][0]) <= READ_CHUNK_BYTES  # only the start of the long line was kept


def test_a_run_of_empty_lines_is_read_as_one_but_numbered_as_many(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [request("a"), "", "", "", "{bad"])
    with pytest.raises(RequestValidationError, match="line 5: "):
        prepare_job(RequestSource(requests_path=path))


# -- params against the typed model of the Messages request ---------------------------------------


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"temprature": 0.5}, "params.temprature is not a known field: did you mean 'temperature'?"),
        ({"temperature": "hot"}, "params.temperature must be a number from 0 to 1, got 'hot'"),
        ({"temperature": 5}, "params.temperature must be a number from 0 to 1, got 5"),
        ({"top_p": -0.1}, "params.top_p must be a number from 0 to 1"),
        ({"top_k": -1}, "params.top_k must be an integer >= 0"),
        ({"tools": {"name": "t"}}, "params.tools must be a list of objects with 'name', got dict"),
        ({"tools": [{"input_schema": {}}]}, "params.tools.0.name is missing"),
        ({"stop_sequences": "END"}, "params.stop_sequences must be a list of strings, got 'END'"),
        ({"system": 7}, "params.system must be a string or a list of objects"),
        (
            {"metadata": {"userid": "u"}},
            "params.metadata.userid is not a known field: did you mean 'user_id'?",
        ),
        ({"service_tier": "batch"}, "params.service_tier must be one of 'auto', 'standard_only'"),
        ({"tool_choice": {"type": "sometimes"}}, "params.tool_choice.type must be one of 'auto', 'any'"),
        ({"tool_choice": {"type": "tool"}}, "params.tool_choice.name is missing"),
        ({"thinking": {"type": "enabled", "budget_tokens": 10}}, "budget_tokens must be an integer >= 1,024"),
        ({"output_config": {"effort": "extreme"}}, "params.output_config.effort must be one of"),
        ({"cache_control": {"type": "permanent"}}, "params.cache_control.type must be 'ephemeral'"),
        (
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            "params.messages.0.content.0.type is missing",
        ),
        ({"messages": [{"role": "user"}]}, "params.messages.0.content is missing"),
        (
            {"messages": [{"role": "user", "content": "x", "name": "n"}]},
            "params.messages.0.name is not a known",
        ),
    ],
)
def test_params_are_checked_against_the_messages_request(params: dict[str, Any], words: str) -> None:
    assert words in invalid(RequestSource(requests=[request("a", **params)]))


def test_every_problem_of_one_request_is_listed_at_once() -> None:
    message = invalid(RequestSource(requests=[request("a", temprature=1, top_k="x", tools=3)]))
    assert "1 invalid request(s)" in message
    assert all(field in message for field in ("params.temprature", "params.top_k", "params.tools"))


def test_valid_real_requests_pass_the_typed_model() -> None:
    content = [
        {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}, "title": "A"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
        {"type": "some_future_block", "anything": {"goes": True}},
    ]
    full = request(
        "a",
        system=[{"type": "text", "text": "Be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}}],
            },
            {"role": "user", "content": content},
        ],
        metadata={"user_id": "u-1"},
        stop_sequences=["END"],
        temperature=0,
        top_p=1,
        top_k=40,
        tools=[
            {"name": "calc", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        tool_choice={"type": "tool", "name": "calc", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 2048},
        service_tier="auto",
        output_config={"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
        max_tokens=1_000_000,
        stream=False,
    )
    assert prepare_job(RequestSource(requests=[full])).request_count == 1


# -- API errors translated to the file line --------------------------------------------------------


def test_an_api_error_naming_a_batch_index_is_translated_to_line_and_custom_id(tmp_path: Path) -> None:
    lines: list[Any] = [request(f"r{i}") for i in range(5)]
    lines.insert(3, "")  # a blank line: indexes and line numbers differ
    job = prepare_job(RequestSource(requests_path=write_jsonl(tmp_path / "r.jsonl", lines)), max_requests=2)
    second = job.slices[1]  # r2, r3
    explained = job.explain_api_error(second, "requests.1.params.temperature: Input should be <= 1")
    assert explained.startswith("line 5 (custom_id 'r3'), params.temperature: Input should be <= 1")
    assert "the API said: requests.1.params.temperature" in explained


def test_an_api_error_without_an_index_is_left_as_it_is() -> None:
    job = prepare_job(RequestSource(requests=[request("a")]))
    assert job.explain_api_error(job.slices[0], "body: invalid JSON") == "body: invalid JSON"
