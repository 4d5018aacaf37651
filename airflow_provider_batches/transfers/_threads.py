"""Overlap the three stages of a results copy: receiving, verifying, and compressing/hashing/storing.

Receiving (socket reads), zlib, sha256 and storage writes all release the GIL, so running them in
their own threads leaves the verifying thread (the only Python-bound stage) nearly the whole time.
Queues are bounded, so memory stays a few chunks per stage whatever the size of the results.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Iterator[bytes], *, depth: int = 4) -> Iterator[bytes]:
    """Items of ``source``, read ahead by a background thread; its errors are raised here, in order."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:
            put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=pump, name="results-prefetch", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class BackgroundWriter:
    """Calls ``write`` with each chunk in a background thread; the first error is raised to the caller."""

    def __init__(
        self, write: Callable[[bytes | memoryview], Any], *, depth: int = 8, name: str = "results-writer"
    ) -> None:
        self._write = write
        self._chunks: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self._write(chunk)
                except BaseException as exc:
                    self._error = exc

    def write(self, chunk: bytes | memoryview) -> None:
        self._raise_error()
        self._chunks.put(chunk)

    def finish(self) -> None:
        """Wait until every chunk is written; raise what went wrong, if anything."""
        self.stop()
        self._raise_error()

    def stop(self) -> None:
        """Wait for the thread to end (already queued chunks are still written, or skipped after an error)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
