"""Request sources: validation before any call, streaming encoding, splitting within the limits."""

from __future__ import annotations

import gzip
import json
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
        (json.dumps(request(max_tokens=0)), "params.max_tokens must be an integer >= 1"),
        (json.dumps(request(max_tokens="10")), "params.max_tokens must be an integer >= 1"),
        (json.dumps(request(stream=True)), "params.stream: true is not allowed"),
        (json.dumps(request(messages=[])), "params.messages must be a non-empty list"),
        (json.dumps(request(messages=[{"role": "system", "content": "x"}])), "params.messages.0.role"),
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
