"""A follow-up round's requests read from the spans that hold them: the same round, bytes and
fingerprint, as the same requests picked out of the whole input, from any kind of source."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.errors import InputChangedError
from airflow_provider_batches.requests import (
    PreparedJob,
    RequestSource,
    SourceSpan,
    prepare_job,
    prepare_subset,
)
from airflow_provider_batches.structured_output import with_output_schema
from tests.test_requests_scale import mixed_lines

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}
WANTED = {"r2", "r3", "r17", "r30", "r31", "r38"}


def spans_of(job: PreparedJob) -> list[SourceSpan]:
    """The spans a job record gives (see ``operators.rounds.source_spans``)."""
    slices = job.slices
    return [
        SourceSpan(
            part.index,
            part.start,
            part.count,
            part.offset,
            part.first_line,
            slices[part.index + 1].offset if part.index + 1 < len(slices) else None,
            part.sha256,
        )
        for part in slices
    ]


def bodies(job: PreparedJob) -> list[bytes]:
    return [b"".join(job.body(part).chunks()) for part in job.slices]


def source(kind: str, tmp_path: Path) -> RequestSource:
    data = mixed_lines(40)
    if kind == "inline":
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        return RequestSource(requests=lines, model="dflt")
    path = tmp_path / ("r.jsonl.gz" if kind == "gz" else "r.jsonl")
    path.write_bytes(gzip.compress(data) if kind == "gz" else data)
    made = RequestSource(requests_path=str(path), model="dflt")
    return with_output_schema(made, SCHEMA) if kind == "schema" else made


@pytest.mark.parametrize("kind", ["jsonl", "gz", "inline", "schema"])
def test_a_round_read_from_its_spans_is_the_round_picked_from_the_whole_input(
    tmp_path: Path, kind: str
) -> None:
    given = source(kind, tmp_path)
    job = prepare_job(given, max_requests=5)
    holding = [span for span in spans_of(job) if span.index in (0, 3, 6, 7)]  # r2 r3 / r17 / r30 r31 / r38

    read = prepare_subset(given, holding, WANTED, max_requests=4)
    picked = prepare_job(given.subset(WANTED), max_requests=4)

    assert read.fingerprint == picked.fingerprint
    assert bodies(read) == bodies(picked)
    assert [part.origins for part in read.slices] == [(0, 3, 6), (6, 7)]  # r2 r3 r17 r30 | r31 r38


def test_a_span_whose_lines_changed_is_input_changed(tmp_path: Path) -> None:
    given = source("jsonl", tmp_path)
    job = prepare_job(given, max_requests=5)
    path = Path(given.requests_path or "")
    path.write_bytes(path.read_bytes().replace(b"h\\u00e9 16", b"h\\u00e9 61"))  # r16, beside r17

    with pytest.raises(InputChangedError, match="its batch 4 "):
        prepare_subset(given, spans_of(job)[3:4], {"r17"})


def test_a_span_cut_short_is_input_changed(tmp_path: Path) -> None:
    given = source("jsonl", tmp_path)
    job = prepare_job(given, max_requests=5)
    path = Path(given.requests_path or "")
    path.write_bytes(path.read_bytes()[: job.slices[7].offset])

    with pytest.raises(InputChangedError, match="its batch 8 "):
        prepare_subset(given, spans_of(job)[7:], {"r38"})


def test_lines_outside_the_spans_are_never_read(tmp_path: Path) -> None:
    given = source("jsonl", tmp_path)
    job = prepare_job(given, max_requests=5)
    path = Path(given.requests_path or "")
    data = path.read_bytes()
    start, end = job.slices[3].offset, job.slices[4].offset
    path.write_bytes(b"#" * start + data[start:end] + b"#" * (len(data) - end))  # all else garbage

    read: Any = prepare_subset(given, spans_of(job)[3:4], {"r17"})

    assert read.request_count == 1
    assert b'"r17"' in bodies(read)[0]
