"""Benchmark inputs, generated at run time under ``bench/data/`` (gitignored) and reused while unchanged.

The requests look like a real job: a system prompt, one user message of varied prose (a little
non-ASCII included), ``max_tokens`` large enough that the emulator's echoed answer is never cut.
The emulator answers with ``Emulated reply <digest>: <user text>``, so a ~2 KB user message gives a
~2.5 KB ``succeeded`` result line: 100,000 requests make a ~250 MB request file and ~245 MB of
results (2 % of them short ``errored`` lines).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
MODEL = "claude-sonnet-4-6"  # a current model: the create checks models before any spend

_WORDS = [
    "the",
    "quarterly",
    "report",
    "shows",
    "revenue",
    "growth",
    "across",
    "every",
    "region",
    "while",
    "operating",
    "costs",
    "remained",
    "flat",
    "customer",
    "churn",
    "decreased",
    "after",
    "the",
    "onboarding",
    "flow",
    "was",
    "redesigned",
    "and",
    "support",
    "tickets",
    "resolved",
    "within",
    "one",
    "day",
    "rose",
    "to",
    "ninety",
    "percent",
    "please",
    "summarise",
    "the",
    "findings",
    "list",
    "three",
    "risks",
    "and",
    "propose",
    "next",
    "steps",
    "for",
    "the",
    "data",
    "platform",
    "team",
    "including",
    "migration",
    "of",
    "legacy",
    "pipelines",
    "to",
    "object",
    "storage",
    "schema",
    "evolution",
    "backfills",
    "idempotent",
    "retries",
    "lineage",
    "and",
    "cost",
    "attribution",
    "per",
    "workspace",
    "café",
    "naïve",
    "résumé",
    "—",
    "“quoted”",
    "±5",
    "%",
]

SYSTEM_PROMPT = (
    "You are a meticulous analyst. Answer in plain English, cite the figures you rely on, keep each "
    "answer under three hundred words, and say explicitly when the input does not contain enough "
    "information to answer. Never invent numbers. Use short paragraphs and no tables. Reply in the "
    "language of the question."
)


@dataclass(frozen=True)
class RequestsFile:
    path: Path
    requests: int
    size: int


def _prose(rng: random.Random, target_bytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < target_bytes:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word.encode()) + 1
    return " ".join(words)[:target_bytes]


def _lines(requests: int, user_bytes: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    # A pool of paragraphs, recombined per request: varied text without paying for 250 MB of rng calls.
    pool = [_prose(rng, user_bytes) for _ in range(512)]
    for index in range(requests):
        text = (
            f"Document {index}: " + pool[index % len(pool)][: user_bytes - 24] + f" (ref {rng.random():.6f})"
        )
        request = {
            "custom_id": f"req-{index:07d}",
            "params": {
                "model": MODEL,
                "max_tokens": 1024,
                "system": SYSTEM_PROMPT,
                "messages": [{"role": "user", "content": text}],
            },
        }
        yield json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def requests_file(
    requests: int, *, user_bytes: int = 2000, seed: int = 7, directory: Path | None = None
) -> RequestsFile:
    """The JSONL request file for ``requests`` requests (generated once, then reused), under
    ``directory`` (a run's temporary folder for the gigabyte-sized files) or ``bench/data``."""
    directory = directory or DATA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"requests-{requests}-{user_bytes}-{seed}-{MODEL}.jsonl"  # a new model, a new file
    if not path.exists():
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as out:
            for line in _lines(requests, user_bytes, seed):
                out.write(line)
        temporary.replace(path)
    count = 0
    with path.open("rb") as source:
        for _ in source:
            count += 1
    return RequestsFile(path, count, path.stat().st_size)


def body_file(source: RequestsFile) -> Path:
    """The create-batch body ``{"requests":[...]}`` holding exactly the lines of ``source``, on disk."""
    path = source.path.with_suffix(".body.json")
    if not path.exists() or path.stat().st_mtime < source.path.stat().st_mtime:
        temporary = path.with_suffix(".tmp")
        with source.path.open("rb") as lines, temporary.open("wb") as out:
            out.write(b'{"requests":[')
            for number, line in enumerate(lines):
                out.write((b"," if number else b"") + line.rstrip(b"\n"))
            out.write(b"]}")
        temporary.replace(path)
    return path


def batch_body_files(
    source: RequestsFile, max_requests: int = 100_000, max_bytes: int = 256_000_000
) -> list[Path]:
    """The create bodies of ``source`` split as the API's limits require (the floor of a many-batch job)."""
    paths: list[Path] = []
    out = None
    count = size = 0
    with source.path.open("rb") as lines:
        for line in lines:
            line = line.rstrip(b"\n")
            if out is None or count >= max_requests or size + 1 + len(line) > max_bytes:
                if out is not None:
                    out.write(b"]}")
                    out.close()
                paths.append(source.path.with_suffix(f".body-{len(paths)}.json"))
                out = paths[-1].open("wb")
                out.write(b'{"requests":[')
                count, size = 0, 15
            out.write((b"," if count else b"") + line)
            size += (1 if count else 0) + len(line)
            count += 1
    if out is not None:
        out.write(b"]}")
        out.close()
    return paths
