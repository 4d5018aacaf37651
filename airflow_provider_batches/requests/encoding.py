"""The streamed create body: each batch's requests encoded once, by the validation pass, and streamed.

A file line that needs no change is sent as it is: the body reads it from the source again and the
batch's digest proves it is the line that was checked. A request that had to be encoded (its model
filled in, its params rewritten for an output schema, an inline or prompt request) is written once to
an :class:`EncodedSpool` by the validation pass and read back from there: never decoded nor checked
again, whatever the wrapping.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from itertools import repeat
from typing import IO, TYPE_CHECKING

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.requests.limits import BODY_CHUNK_BYTES, BODY_END, BODY_START, READ_CHUNK_BYTES

if TYPE_CHECKING:
    from airflow_provider_batches.requests.reading import SourceLine
    from airflow_provider_batches.requests.slicing import BatchSlice
    from airflow_provider_batches.requests.sources import RequestSource


class EncodedSpool:
    """The encoded requests a body cannot take from the source as they are, one per line, in a
    temporary file (removed when closed or collected): memory stays flat whatever the job's size.

    An encoded request never holds a newline (JSON escapes it), so lines delimit them.
    """

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self.size = 0

    def write(self, encoded: bytes) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="anthropic-batch-encoded-")  # noqa: SIM115
        self._file.write(encoded)
        self._file.write(b"\n")
        self.size += len(encoded) + 1

    def finish(self) -> None:
        if self._file is not None:
            self._file.flush()

    def lines(self, offset: int) -> Iterator[bytes]:
        """The encoded requests from byte ``offset`` on (read with ``pread``: many readers at once)."""
        if self._file is None:
            return
        descriptor, rest = self._file.fileno(), b""
        while offset < self.size and (chunk := os.pread(descriptor, READ_CHUNK_BYTES, offset)):
            offset += len(chunk)
            pieces = (rest + chunk).split(b"\n")
            rest = pieces.pop()
            yield from pieces

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def stream_body(
    source: RequestSource,
    batch_slice: BatchSlice,
    reencoded: bytes,
    spooled: Iterator[bytes],
    resume: dict[int, Iterator[SourceLine | None]],
    request_count: int,
    source_digest: str,
    proof: bytes = b"",
) -> Iterator[bytes]:
    """The body of one batch, chunk by chunk: ``{"requests":[`` its requests, ``proof``, ``]}``.

    ``reencoded`` flags (one byte per request of the job) the requests taken from ``spooled`` (the
    spool from this batch's first one on); the others are the source's lines as they are, read from
    the batch's offset. The file lines of spooled requests are read too, and their digest must be
    ``source_digest`` (sha256 of those lines as the validation pass read them): a changed file is
    refused whichever line changed. An inline batch is read from the spool alone. ``resume`` holds the
    line reader a finished body left off at, by the position it reads next.
    """
    start, end = batch_slice.start, batch_slice.start + batch_slice.count
    from_source = source.requests is None or reencoded.find(0, start, end) >= 0
    lines: Iterator[SourceLine | None]
    if from_source:
        lines = (
            resume.pop(start)
            if start in resume
            else source.iter_lines(offset=batch_slice.offset, first_line=batch_slice.first_line)
        )
    else:
        lines = repeat(None, batch_slice.count)
    resume.clear()
    digest, read = hashlib.sha256(), hashlib.sha256()
    buffer = bytearray(BODY_START)
    position = start
    for line in lines:
        if reencoded[position]:
            encoded = next(spooled, b"")  # encoded by the validation pass: not decoded nor checked again
            if line is not None and line.raw is not None:
                read.update(line.raw)
        elif line is not None and line.raw is not None:
            encoded = line.raw  # validated in the first pass; the digest below proves it unchanged
        else:
            break  # an inline request where a file line was: the source changed
        digest.update(encoded)
        if position > start:
            buffer += b","
        buffer += encoded
        position += 1
        if len(buffer) >= BODY_CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
        if position == end:
            break
    if position != end or digest.hexdigest() != batch_slice.sha256 or read.hexdigest() != source_digest:
        # Raising before the closing bytes aborts the upload: the API never sees a whole body.
        raise RequestValidationError(
            f"{source.describe()} changed after it was validated (batch {batch_slice.index + 1} "
            "differs); nothing was submitted for it. Do not rewrite the input while the task runs."
        )
    if from_source and end < request_count:
        resume[end] = lines  # only a body read to its end hands its reader on
    buffer += proof + BODY_END
    yield bytes(buffer)
