"""Request bodies the client streams: data only, no I/O, so input preparation needs no hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable


class BatchBody:
    """A create-batch body streamed from chunks (``{"requests": [...]}`` already encoded).

    ``chunks`` is called once per attempt, so a retried create streams the body again instead of
    holding it in memory.
    """

    def __init__(self, chunks: Callable[[], Iterable[bytes]], request_count: int) -> None:
        self.chunks = chunks
        self.request_count = request_count
