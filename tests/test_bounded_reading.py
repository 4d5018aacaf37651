"""Bounded reading of request files: a line that never ends, and a gzip bomb, are refused within
seconds by an error naming the line, on every path that reads requests (create, count tokens,
re-drive), which share one reader."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator
from airflow_provider_batches.requests import (
    EXPANSION_FREE_BYTES,
    MAX_EXPANSION_RATIO,
    RequestSource,
    prepare_job,
)
from tests.operators.support import batches_created, request, task_context

DEV_ZERO = "/dev/zero"


def gzip_bomb(path: Path, pattern: bytes, decompressed_gb: int = 10) -> str:
    """A .gz of ``decompressed_gb`` GB of ``pattern`` (about 1,000x), written in a second: one member
    of 100 MB compressed once, repeated (gzip members concatenate)."""
    member = gzip.compress(pattern * (100_000_000 // len(pattern)), 9)
    with path.open("wb") as out:
        for _ in range(decompressed_gb * 10):
            out.write(member)
    return str(path)


def refused_within(seconds: float, source: RequestSource, **kwargs: Any) -> str:
    started = time.monotonic()
    with pytest.raises(RequestValidationError) as raised:
        prepare_job(source, **kwargs)
    assert time.monotonic() - started < seconds
    return str(raised.value)


def test_dev_zero_is_refused_once_its_line_passes_the_batch_limit() -> None:
    message = refused_within(5, RequestSource(requests_path=DEV_ZERO), max_bytes=5_000_000)

    assert "line 1: is longer than the 4,999,473 bytes a request can have" in message
    assert "the file was not read further" in message


def test_dev_zero_is_refused_at_the_api_limit_by_default() -> None:
    message = refused_within(20, RequestSource(requests_path=DEV_ZERO))

    assert (
        "line 1: is longer than the 255,999,473 bytes a request can have in a 256,000,000-byte batch"
        in message
    )


def test_a_gzip_bomb_of_empty_lines_is_refused_naming_the_line(tmp_path: Path) -> None:
    bomb = gzip_bomb(tmp_path / "requests.jsonl.gz", b"\n")

    message = refused_within(10, RequestSource(requests_path=bomb))

    line = int(re.search(r"refused at line (\d+):", message).group(1))  # type: ignore[union-attr]
    assert EXPANSION_FREE_BYTES < line < 2 * EXPANSION_FREE_BYTES  # each empty line counted
    assert f"expands more than {MAX_EXPANSION_RATIO} times" in message
    assert "Decompress it and pass the .jsonl file" in message


def test_a_gzip_bomb_of_one_endless_line_is_refused(tmp_path: Path) -> None:
    bomb = gzip_bomb(tmp_path / "requests.jsonl.gz", b"\0" * 1000)

    message = refused_within(10, RequestSource(requests_path=bomb))

    assert "refused at line 1: the gzip file expands more than" in message


def test_a_well_compressed_real_file_is_read_whole(tmp_path: Path) -> None:
    prompt = "Summarize the following text in one sentence. " * 50  # the same long prompt everywhere
    lines = [request(f"req-{i}", prompt) for i in range(15_000)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(gzip.compress(data, 9))
    assert len(data) > EXPANSION_FREE_BYTES
    assert len(data) / path.stat().st_size > 200  # as repetitive as request files get

    assert prepare_job(RequestSource(requests_path=str(path))).request_count == 15_000


def test_a_truncated_gzip_names_the_line_it_stopped_at(tmp_path: Path) -> None:
    data = gzip.compress("".join(json.dumps(request(f"r{i}")) + "\n" for i in range(2_000)).encode())
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(RequestValidationError, match=r"cannot be read at line \d+: EOFError"):
        prepare_job(RequestSource(requests_path=str(path)))


def test_count_tokens_reads_through_the_same_bounds(anthropic_emulator: Emulator) -> None:
    operator = AnthropicCountTokensOperator(task_id="count", requests_path=DEV_ZERO)
    started = time.monotonic()

    with pytest.raises(RequestValidationError, match="line 1: is longer than"):
        operator.execute(task_context())

    assert time.monotonic() - started < 20


def test_the_create_operator_refuses_a_bomb_before_any_batch(
    anthropic_emulator: Emulator, tmp_path: Path
) -> None:
    bomb = gzip_bomb(tmp_path / "requests.jsonl.gz", b"\n")
    operator = AnthropicCreateBatchOperator(task_id="create", requests_path=bomb, deferrable=False)

    with pytest.raises(RequestValidationError, match="expands more than"):
        operator.execute(task_context())

    assert batches_created(anthropic_emulator) == 0


def test_a_re_driven_subset_reads_through_the_same_bounds(tmp_path: Path) -> None:
    bomb = gzip_bomb(tmp_path / "requests.jsonl.gz", b"\n")
    subset = RequestSource(requests_path=bomb).subset({"req-1"})

    with pytest.raises(RequestValidationError, match="expands more than"):
        list(subset.iter_lines())
