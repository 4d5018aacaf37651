"""Every input line is decoded and checked once on its way to the create body, whatever wraps it.

The one validator (``RequestChecker.check``) and the one line decoder (``parse_line``) are counted
per line while the create operator's real ``execute()`` (and the TaskFlow decorator's) reads the
input, checks models, records the job and streams each batch's body to the emulator.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.decorators.anthropic_batch import _AnthropicBatchDecoratedOperator
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.requests import validation
from airflow_provider_batches.requests.reading import SourceLine
from tests.conftest import S3_CONN_ID, S3Endpoint
from tests.operators.support import MODEL, request, task_context

COUNT = 12
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


class Reads:
    """How often each line (by its place: file line or inline index) was checked and decoded."""

    def __init__(self) -> None:
        self.checked: Counter[str] = Counter()
        self.decoded: Counter[bytes] = Counter()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    counts = Reads()
    check, parse_line = validation.RequestChecker.check, validation.parse_line

    def counted_check(self: validation.RequestChecker, line: SourceLine) -> Any:
        counts.checked[line.location] += 1
        return check(self, line)

    def counted_parse(raw: bytes) -> Any:
        counts.decoded[raw] += 1
        return parse_line(raw)

    monkeypatch.setattr(validation.RequestChecker, "check", counted_check)
    monkeypatch.setattr(validation, "parse_line", counted_parse)
    return counts


def lines(model: bool = True) -> list[dict[str, Any]]:
    """``COUNT`` requests; without ``model`` every other one leaves it to the operator's default."""
    built = [request(f"r{index}", f"question {index}") for index in range(COUNT)]
    if not model:
        for entry in built[::2]:
            del entry["params"]["model"]
    return built


def jsonl(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode()


def execute(**settings: Any) -> dict[str, Any]:
    operator = AnthropicCreateBatchOperator(
        task_id="create",
        model=MODEL,
        max_requests_per_batch=5,  # three batches: each body read from its own offset
        wait_for_completion=False,
        deferrable=False,
        **settings,
    )
    manifest: dict[str, Any] = operator.execute(task_context())
    operator.hook.close()
    return manifest


def assert_each_line_once(reads: Reads, manifest: dict[str, Any], *, decoded: bool) -> None:
    assert manifest["request_count"] == COUNT
    assert len(manifest["batch_ids"]) == 3
    assert len(reads.checked) == COUNT
    assert set(reads.checked.values()) == {1}, reads.checked
    if decoded:
        assert len(reads.decoded) == COUNT
        assert set(reads.decoded.values()) == {1}, reads.decoded
    else:
        assert not reads.decoded


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["plain", "output schema"])
@pytest.mark.parametrize("model", [True, False], ids=["own model", "default model"])
@pytest.mark.usefixtures("emulator")
def test_a_file_line_is_checked_once(tmp_path: Path, reads: Reads, schema: Any, model: bool) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl(lines(model)))

    manifest = execute(requests_path=str(path), output_schema=schema)

    assert_each_line_once(reads, manifest, decoded=True)


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["plain", "output schema"])
@pytest.mark.usefixtures("emulator")
def test_a_gzip_line_is_checked_once(tmp_path: Path, reads: Reads, schema: Any) -> None:
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(lines(model=False))))

    manifest = execute(requests_path=str(path), output_schema=schema)

    assert_each_line_once(reads, manifest, decoded=True)


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["plain", "output schema"])
@pytest.mark.usefixtures("emulator")
def test_an_object_storage_line_is_checked_once(
    s3_endpoint: S3Endpoint, s3_bucket: str, reads: Reads, schema: Any
) -> None:
    uri = s3_endpoint.put(s3_bucket, "in/requests.jsonl", jsonl(lines(model=False)))

    manifest = execute(requests_path=uri, requests_conn_id=S3_CONN_ID, output_schema=schema)

    assert_each_line_once(reads, manifest, decoded=True)


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["plain", "output schema"])
@pytest.mark.usefixtures("emulator")
def test_an_inline_request_is_checked_once(reads: Reads, schema: Any) -> None:
    manifest = execute(requests=lines(model=False), output_schema=schema)

    assert_each_line_once(reads, manifest, decoded=False)


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["plain", "output schema"])
@pytest.mark.usefixtures("emulator")
def test_a_prompt_is_checked_once(reads: Reads, schema: Any) -> None:
    prompts = [f"question {index}" for index in range(COUNT)]

    manifest = execute(requests=None, prompts=prompts, max_tokens=16, output_schema=schema)

    assert_each_line_once(reads, manifest, decoded=False)


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["plain", "output schema"])
@pytest.mark.usefixtures("emulator")
def test_a_decorated_functions_request_is_checked_once(reads: Reads, schema: Any) -> None:
    def produce() -> Iterator[Any]:
        yield from lines(model=False)[: COUNT // 2]
        yield from (f"question {index}" for index in range(COUNT // 2, COUNT))  # prompts among requests

    operator = _AnthropicBatchDecoratedOperator(
        task_id="decorated",
        python_callable=produce,
        model=MODEL,
        max_tokens=16,
        max_requests_per_batch=5,
        wait_for_completion=False,
        deferrable=False,
        output_schema=schema,
    )
    manifest = operator.execute(task_context())
    operator.hook.close()

    assert_each_line_once(reads, manifest, decoded=True)


def test_a_line_seen_twice_by_the_counter_would_fail_it(reads: Reads) -> None:
    """The counter itself: a second check of one line shows as a count of 2."""
    checker = validation.RequestChecker(MODEL)
    line = SourceLine(1, 0, raw=json.dumps(request("a")).encode())
    checker.check(line)
    checker.check(line)

    assert reads.checked == Counter({"line 1": 2})
    assert reads.decoded[line.raw or b""] == 2
