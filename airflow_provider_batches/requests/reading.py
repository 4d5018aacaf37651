"""The one bounded reader of request files: lines in order, a line refused once past the limit
(nothing read after it), ``.gz`` expanded within a bound."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, Protocol, cast

from airflow_provider_batches.requests.limits import READ_CHUNK_BYTES


class SourceLine(NamedTuple):
    """One request as read: where it was (for messages), its raw bytes or object. A named tuple:
    two are made per request (validation pass, body pass), and a frozen dataclass costs 5x more.

    ``number`` is the file line (from 1) or the inline index; ``offset`` the byte offset of the
    line's start in the (decompressed) file, or the inline index. ``size`` is set on a file line
    longer than the line limit: ``raw`` then holds only its start.
    """

    number: int
    offset: int
    raw: bytes | None = None
    value: Any = None
    size: int | None = None
    #: A file line given as an object (rewritten by a wrapping source): still named by its line.
    file_line: bool = False

    @property
    def location(self) -> str:
        return f"line {self.number}" if self.raw is not None or self.file_line else f"requests[{self.number}]"


@dataclass(frozen=True)
class SourceSpan:
    """Where one batch of a job's first round lies in its source, as the job record keeps it: a
    follow-up round reads only the spans that hold its requests, and checks each against its digest.

    Requests ``start`` to ``start + count`` (their ordinals in the source), from byte ``offset`` (the
    inline index) on line ``first_line``, up to ``end`` (where the next batch starts; None: the end
    of the source). ``sha256`` is the digest of the batch's encoded requests; ``index`` its place
    among the first round's batches.
    """

    index: int
    start: int
    count: int
    offset: int
    first_line: int
    end: int | None
    sha256: str


class Readable(Protocol):
    """What the reader needs of a stream: a file, an object storage file, a :class:`Window`."""

    def read(self, size: int = -1, /) -> bytes: ...


class Window:
    """The first ``size`` bytes of a stream from where it is: a span read without reading past it."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self._left = size

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._stream.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        return data


def read_lines(stream: Readable, limit: int, offset: int = 0) -> Iterator[tuple[bytes, int, int, int]]:
    """Each line of ``stream`` (without its newline), its size, its start's offset and how many file
    lines it stands for (a run of empty lines comes back once, as one empty line standing for all),
    read in chunks. ``offset`` is where the stream is: offsets count from the start of the file.

    A line over ``limit`` bytes is never held whole, and ends the reading: it comes back as soon as
    it passes the limit, with its first chunk only (to name its custom_id) and a size over the limit.
    """
    parts: list[bytes] = []
    size = 0  # bytes of the current, unfinished line
    line_start = base = offset  # where that line started; where ``chunk`` starts
    while chunk := stream.read(READ_CHUNK_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if end == start and not size:  # empty lines: skipped as a run, not one by one
                run = _EMPTY_LINES.match(chunk, start)
                assert run is not None
                yield b"", 0, base + start, run.end() - start
                start = run.end()
                continue
            piece = chunk[start:end]
            if size:
                size += len(piece)
                if size > limit:
                    yield parts[0][:READ_CHUNK_BYTES], size, line_start, 1
                    return
                yield b"".join([*parts, piece]), size, line_start, 1
                parts, size = [], 0
            elif len(piece) > limit:
                yield piece[:READ_CHUNK_BYTES], len(piece), base + start, 1
                return
            else:
                yield piece, len(piece), base + start, 1
            start = end + 1
        if start < len(chunk):
            rest = chunk[start:]
            if not size:
                line_start = base + start
            size += len(rest)
            parts.append(rest)
            if size > limit:
                yield parts[0][:READ_CHUNK_BYTES], size, line_start, 1
                return
        base += len(chunk)
    if size:
        yield b"".join(parts), size, line_start, 1


_EMPTY_LINES = re.compile(rb"\n+")

MAX_EXPANSION_RATIO = 500
"""A ``.gz`` request file may decompress to at most this many times the compressed bytes read so far
(past :data:`EXPANSION_FREE_BYTES`). Real request files compress 5-250x (235x measured for 20,000
requests with the same long prompt); gzip's ceiling is about 1,030x, which bombs reach."""
EXPANSION_FREE_BYTES = 32 * 1024 * 1024
"""The first bytes of any ``.gz`` are never refused for their ratio: a small file may compress well."""


class ExpansionBoundError(OSError):
    """A compressed input expands further than :data:`MAX_EXPANSION_RATIO` allows."""


class _Counted:
    """The compressed side of :class:`BoundedGzip`: counts what gzip reads."""

    def __init__(self, raw: IO[bytes], owner: BoundedGzip) -> None:
        self._raw = raw
        self._owner = owner

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read(size)
        self._owner.compressed += len(data)
        return data


class BoundedGzip:
    """A ``.gz`` stream, decompressed, that refuses to expand past :data:`MAX_EXPANSION_RATIO`: a
    gzip bomb is refused after reading :data:`EXPANSION_FREE_BYTES` or so, not after hours."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.compressed = 0
        self.decompressed = 0
        self._gzip = gzip.GzipFile(fileobj=cast(IO[bytes], _Counted(raw, self)), mode="rb")

    def read(self, size: int = -1) -> bytes:
        data = self._gzip.read(size)
        self.decompressed += len(data)
        if self.decompressed > max(EXPANSION_FREE_BYTES, MAX_EXPANSION_RATIO * self.compressed):
            raise ExpansionBoundError(
                f"the gzip file expands more than {MAX_EXPANSION_RATIO} times ({self.decompressed:,} bytes "
                f"from {self.compressed:,}): a decompression bomb, or input far more repetitive than "
                "requests are. Decompress it and pass the .jsonl file (it is streamed the same way)"
            )
        return data

    def seek(self, offset: int) -> int:
        """Forward only (as gzip itself), through :meth:`read`: skipped bytes count toward the bound."""
        while self.decompressed < offset and self.read(min(READ_CHUNK_BYTES, offset - self.decompressed)):
            pass
        return self.decompressed

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()

    def __enter__(self) -> BoundedGzip:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
