"""Big jobs: each batch's body read from its own offset, custom_ids checked in bounded memory."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.requests import PreparedJob, RequestSource, prepare_job
from airflow_provider_batches.requests import validation as requests_module
from tests.conftest import S3_CONN_ID, S3Endpoint


def request(custom_id: str, model: str | None = "own", text: str = "hi") -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    if model is not None:
        params["model"] = model
    return {"custom_id": custom_id, "params": params}


def mixed_lines(count: int) -> bytes:
    """CRLF and LF endings, blank lines, lines with and without a model, non-ASCII, no final newline."""
    out = bytearray()
    for i in range(count):
        line = json.dumps(request(f"r{i}", model=None if i % 3 == 0 else "own", text=f"hé {i}"))
        if i % 4 == 1:
            line = line.replace(", ", ",  ")  # not compact: sent byte for byte when not re-encoded
        out += line.encode() + (b"\r\n" if i % 2 else b"\n")
        if i % 5 == 2:
            out += b"\n   \r\n"
    return bytes(out.rstrip(b"\r\n"))


def expected_bodies(data: bytes, job: PreparedJob, model: str) -> list[bytes]:
    """What a fresh read from the top sends for each batch, computed without the module."""
    encoded = []
    for raw in data.split(b"\n"):
        raw = raw.strip()
        if not raw:
            continue
        value = json.loads(raw)
        if "model" in value["params"]:
            encoded.append(raw)
        else:
            value["params"]["model"] = model
            encoded.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    return [b'{"requests":[' + b",".join(encoded[s.start : s.start + s.count]) + b"]}" for s in job.slices]


def body(job: PreparedJob, index: int) -> bytes:
    return b"".join(job.body(job.slices[index]).chunks())


@pytest.fixture(params=["jsonl", "jsonl.gz"])
def mixed_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes]:
    data = mixed_lines(40)
    path = tmp_path / f"r.{request.param}"
    path.write_bytes(gzip.compress(data) if request.param.endswith(".gz") else data)
    return path, data


def test_every_batch_body_equals_a_fresh_read_from_the_top(mixed_file: tuple[Path, bytes]) -> None:
    path, data = mixed_file
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=3)
    assert len(job.slices) == 14
    assert [body(job, k) for k in range(len(job.slices))] == expected_bodies(data, job, "dflt")


def test_bodies_out_of_order_and_again_are_the_same_bytes(mixed_file: tuple[Path, bytes]) -> None:
    path, data = mixed_file
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=7)
    expected = expected_bodies(data, job, "dflt")
    for k in [3, 0, 1, 1, 5, 2, 2, 4]:
        assert body(job, k) == expected[k], k


def test_each_batch_records_where_its_first_request_starts(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(mixed_lines(12))
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=5)
    lines = path.read_bytes().split(b"\n")
    for batch_slice in job.slices:
        line = lines[batch_slice.first_line - 1]
        assert json.loads(line)["custom_id"] == f"r{batch_slice.start}"
        assert path.read_bytes()[batch_slice.offset :].startswith(line)


def test_an_api_error_in_a_later_batch_names_its_file_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(mixed_lines(12))
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=5)
    message = job.explain_api_error(job.slices[2], "requests.1.params: bad")
    lines = path.read_bytes().split(b"\n")
    line_number = next(n for n, line in enumerate(lines, start=1) if b'"r11"' in line)
    assert message.startswith(f"line {line_number} (custom_id 'r11'), params: bad")


def test_a_batch_body_never_reads_the_bytes_before_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    data = mixed_lines(20)
    path.write_bytes(data)
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=5)
    expected = expected_bodies(data, job, "dflt")
    head = job.slices[3].offset
    path.write_bytes(b"#" * head + data[head:])  # everything before batch 4 is now garbage
    assert body(job, 3) == expected[3]
    with pytest.raises(RequestValidationError, match="nothing was (sent|submitted)"):
        body(job, 0)


def test_a_gz_batch_continues_where_the_previous_body_ended(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    data = mixed_lines(20)
    path.write_bytes(gzip.compress(data))
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=5)
    expected = expected_bodies(data, job, "dflt")
    assert body(job, 0) == expected[0]
    replacement = tmp_path / "other.gz"
    replacement.write_bytes(gzip.compress(data.replace(b"r1", b"x1")))
    os.replace(replacement, path)  # a fresh open would read other bytes: batch 2 reads on from batch 1
    assert body(job, 1) == expected[1]


@pytest.mark.parametrize("changed_batch", [0, 2, 3])
def test_a_change_in_any_batch_is_refused_before_its_closing_bytes(
    tmp_path: Path, changed_batch: int
) -> None:
    path = tmp_path / "r.jsonl"
    data = mixed_lines(20)
    path.write_bytes(data)
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=5)
    expected = expected_bodies(data, job, "dflt")
    offset = job.slices[changed_batch].offset
    position = offset + data[offset:].index(b"16")
    path.write_bytes(data[:position] + b"17" + data[position + 2 :])  # same length, one digit changed
    for k in range(len(job.slices)):
        if k == changed_batch:
            chunks = job.body(job.slices[k]).chunks()
            with pytest.raises(RequestValidationError, match=f"batch {k + 1} differs"):
                b"".join(chunks)
        else:
            assert body(job, k) == expected[k]


def test_a_file_cut_short_after_validation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    data = mixed_lines(20)
    path.write_bytes(data)
    job = prepare_job(RequestSource(requests_path=str(path), model="dflt"), max_requests=5)
    path.write_bytes(data[: job.slices[3].offset + 10])
    with pytest.raises(RequestValidationError, match="nothing was (sent|submitted)"):
        body(job, 3)


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz"])
def test_batch_bodies_from_s3_equal_a_fresh_read(
    s3_endpoint: S3Endpoint, s3_bucket: str, suffix: str
) -> None:
    data = mixed_lines(20)
    uri = s3_endpoint.put(
        s3_bucket, f"in/r.{suffix}", gzip.compress(data) if suffix.endswith(".gz") else data
    )
    source = RequestSource(requests_path=uri, requests_conn_id=S3_CONN_ID, model="dflt")
    job = prepare_job(source, max_requests=5)
    assert [body(job, k) for k in range(len(job.slices))] == expected_bodies(data, job, "dflt")


def test_a_batch_body_from_s3_seeks_past_the_bytes_before_it(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    data = mixed_lines(20)
    uri = s3_endpoint.put(s3_bucket, "in/r.jsonl", data)
    job = prepare_job(
        RequestSource(requests_path=uri, requests_conn_id=S3_CONN_ID, model="dflt"), max_requests=5
    )
    head = job.slices[2].offset
    s3_endpoint.put(s3_bucket, "in/r.jsonl", b"#" * head + data[head:])  # garbage before batch 3
    assert body(job, 2) == expected_bodies(data, job, "dflt")[2]


# -- custom_ids: bounded memory, exact answers ----------------------------------------------------


@pytest.fixture
def two_bit_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """custom_ids compared by 2-bit keys: distinct ids collide all the time."""
    monkeypatch.setattr(requests_module, "UNIQUE_KEY_BITS", 2)


@pytest.mark.usefixtures("two_bit_keys")
def test_distinct_custom_ids_sharing_a_key_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(request(f"id{i}")) + "\n" for i in range(50)))
    job = prepare_job(RequestSource(requests_path=str(path)), max_requests=20)
    assert job.request_count == 50


@pytest.mark.usefixtures("two_bit_keys")
def test_a_duplicate_among_colliding_keys_names_both_lines_and_only_it(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    ids = [f"id{i}" for i in range(30)] + ["id7"] + [f"more{i}" for i in range(10)]
    path.write_text("".join(json.dumps(request(i)) + "\n" for i in ids))
    with pytest.raises(RequestValidationError) as raised:
        prepare_job(RequestSource(requests_path=str(path)))
    assert str(raised.value).startswith("1 invalid request(s)")
    assert "line 31 (custom_id 'id7'): custom_id duplicates the one at line 8" in str(raised.value)


@pytest.mark.usefixtures("two_bit_keys")
def test_streamed_requests_with_colliding_keys_stop_only_at_a_real_duplicate() -> None:
    ids = [f"id{i}" for i in range(20)] + ["id3"]
    streamed: list[str] = []
    duplicate = r"requests\[20\] \(custom_id 'id3'\): custom_id duplicates the one at requests\[3\]"
    requests = RequestSource(requests=[request(i) for i in ids]).iter_requests()
    streamed.extend(item["custom_id"] for item in itertools.islice(requests, 20))
    with pytest.raises(RequestValidationError, match=duplicate):
        next(requests)
    assert streamed == ids[:20]


def test_the_custom_id_check_holds_about_16_bytes_per_request(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    count = 30_000
    line = json.dumps(request("X" * 40)).encode()
    with path.open("wb") as out:
        for i in range(count):
            out.write(line.replace(b"X" * 40, f"{i:040d}".encode()) + b"\n")
    warm = tmp_path / "warm.jsonl"
    warm.write_text(json.dumps(request("warm")) + "\n")
    prepare_job(RequestSource(requests_path=str(warm)))  # imports and caches outside the measure
    tracemalloc.start()
    try:
        job = prepare_job(RequestSource(requests_path=str(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job.request_count == count
    # A dict of digests to location strings took ~140 bytes per request (4.2 MB here).
    assert peak < 3_500_000, f"{count:,} requests peaked at {peak:,} bytes"


def test_a_split_file_job_asking_for_structured_output_sends_every_request_once(tmp_path: Path) -> None:
    from airflow_provider_batches.structured_output import with_output_schema

    path = tmp_path / "requests.jsonl"
    path.write_text(
        "\n".join(json.dumps(request(f"r{i}", model="claude-haiku-4-5")) for i in range(7)) + "\n"
    )
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    source = with_output_schema(RequestSource(requests_path=str(path)), schema)
    job = prepare_job(source, max_requests=3)

    sent = [json.loads(body(job, index))["requests"] for index in range(len(job.slices))]

    assert [[r["custom_id"] for r in part] for part in sent] == [
        ["r0", "r1", "r2"],
        ["r3", "r4", "r5"],
        ["r6"],
    ]
    assert all("output_config" in r["params"] or "tools" in r["params"] for part in sent for r in part)


def test_a_rewritten_file_line_is_still_named_by_its_line(tmp_path: Path) -> None:
    from airflow_provider_batches.structured_output import with_output_schema

    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(request("ok", model="claude-haiku-4-5")) + "\n")
    source = with_output_schema(RequestSource(requests_path=str(path)), {"type": "object"})

    (line,) = list(source.iter_lines())

    assert line.location == "line 1"
