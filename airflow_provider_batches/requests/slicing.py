"""Slicing a job into batches that fit the API's limits: each batch's requests, size, digests and
where its lines start in the source."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from airflow_provider_batches.identity import CustomIdDigest
from airflow_provider_batches.requests.limits import ENVELOPE_BYTES
from airflow_provider_batches.requests.reading import SourceLine


@dataclass(frozen=True)
class BatchSlice:
    """One batch of a job: requests ``start`` to ``start + count`` of the source.

    Its first request is at byte ``offset`` of the file (the inline index), on line ``first_line``:
    its body is read from there, not from the top.

    ``size`` is its body's length and ``sha256`` the digest of its encoded requests, checked again
    while the body streams so that a source changed in between is never submitted. ``ids_digest``
    identifies its set of custom_ids (:mod:`~airflow_provider_batches.identity`): the results
    transfer checks a batch's results against it. ``origins``: in a follow-up round, the first
    round's batches (by index) its requests were read from; the round after reads only those.
    """

    index: int
    start: int
    count: int
    size: int
    sha256: str
    ids_digest: str = ""
    offset: int = 0
    first_line: int = 1
    origins: tuple[int, ...] = ()


class SlicePlanner:
    """Greedy split: a new batch whenever the next request would break the count or byte limit."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.slices: list[BatchSlice] = []
        self.total = 0
        self._start = self._count = 0
        self._offset, self._first_line = 0, 1
        self._size = ENVELOPE_BYTES
        self._digest = hashlib.sha256()
        self._ids = CustomIdDigest()
        self._origins: set[int] = set()

    def add(self, encoded: bytes, id_hash: int, line: SourceLine, origin: int | None = None) -> bool:
        """Add a request (read from the first round's batch ``origin``, in a follow-up round); True
        when it starts a new batch."""
        separator = 1 if self._count else 0
        if self._count and (
            self._count >= self.max_requests or self._size + separator + len(encoded) > self.max_bytes
        ):
            self._close()
            separator = 0
        if not self._count:
            self._offset, self._first_line = line.offset, line.number
        self._size += separator + len(encoded)
        self._digest.update(encoded)
        self._ids.add_hash(id_hash)
        if origin is not None:
            self._origins.add(origin)
        self._count += 1
        self.total += 1
        return self._count == 1

    def finish(self) -> list[BatchSlice]:
        if self._count:
            self._close()
        return self.slices

    def _close(self) -> None:
        index = len(self.slices)
        self.slices.append(
            BatchSlice(
                index,
                self._start,
                self._count,
                self._size,
                self._digest.hexdigest(),
                self._ids.hexdigest(),
                self._offset,
                self._first_line,
                tuple(sorted(self._origins)),
            )
        )
        self._start, self._count, self._size = self.total, 0, ENVELOPE_BYTES
        self._digest = hashlib.sha256()
        self._ids = CustomIdDigest()
        self._origins = set()
