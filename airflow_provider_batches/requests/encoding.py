"""The streamed create body: a batch's requests read from the source again and encoded on the fly,
checked against the digest the validation pass recorded, so a changed input is never submitted."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.requests.limits import BODY_CHUNK_BYTES, BODY_END, BODY_START
from airflow_provider_batches.requests.validation import RequestChecker

if TYPE_CHECKING:
    from airflow_provider_batches.requests.reading import SourceLine
    from airflow_provider_batches.requests.slicing import BatchSlice
    from airflow_provider_batches.requests.sources import RequestSource


def stream_body(
    source: RequestSource,
    batch_slice: BatchSlice,
    reencoded: bytes,
    request_count: int,
    resume: dict[int, Iterator[SourceLine]],
    proof: bytes = b"",
) -> Iterator[bytes]:
    """The body of one batch, chunk by chunk: ``{"requests":[`` its requests, ``proof``, ``]}``.

    ``resume`` holds the line reader a finished body left off at, by the position it reads next.
    """
    start, end = batch_slice.start, batch_slice.start + batch_slice.count
    lines = resume.pop(start, None) or source.iter_lines(
        offset=batch_slice.offset, first_line=batch_slice.first_line
    )
    resume.clear()
    checker = RequestChecker(source.model)
    digest = hashlib.sha256()
    buffer = bytearray(BODY_START)
    position = start
    for line in lines:
        if line.raw is not None and not reencoded[position]:
            encoded = line.raw  # validated in the first pass; the digest below proves it unchanged
        elif (checked := checker.check(line)) is not None:
            encoded = checked.encoded
        else:
            raise checker.error(source)
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
    if position != end or digest.hexdigest() != batch_slice.sha256:
        # Raising before the closing bytes aborts the upload: the API never sees a whole body.
        raise RequestValidationError(
            f"{source.describe()} changed after it was validated (batch {batch_slice.index + 1} "
            "differs); nothing was submitted for it. Do not rewrite the input while the task runs."
        )
    if end < request_count:
        resume[end] = lines  # only a body read to its end hands its reader on
    buffer += proof + BODY_END
    yield bytes(buffer)
