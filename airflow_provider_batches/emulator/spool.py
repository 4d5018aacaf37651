"""Bounded-memory handling of create-batch bodies: spool to disk, then parse one request at a time.

A body may be 256 MB with 100,000 requests; holding it (or its parsed form) whole would cost
gigabytes. The body is first written to a file while its size is counted. A well-formed body
(``{"requests": [...]}``, nothing else) is then mapped and its array cut into its elements' bytes by
msgspec in one call, each element decoded as it is used (:func:`iter_request_elements`); any other
body takes the general reader, which decodes the array element by element with
``json.JSONDecoder.raw_decode`` over a sliding buffer and names what is wrong
(:func:`iter_batch_requests`).
"""

from __future__ import annotations

import codecs
import json
import mmap
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from airflow_provider_batches.emulator.apierrors import invalid_request, too_large

READ_CHUNK = 1 << 20
_WHITESPACE = " \t\r\n"
_TRUNCATION_MARGIN = 64
"""A syntax error this close to the end of the buffer may just be a value cut by the chunk boundary."""


async def spool_body(chunks: AsyncIterator[bytes], destination: Path, limit: int) -> int:
    """Write the body to ``destination``; 413 once it exceeds ``limit`` (the rest is read and dropped)."""
    size = 0
    with destination.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size <= limit:
                out.write(chunk)
    if size > limit:
        destination.unlink(missing_ok=True)
        raise too_large(f"request body is {size} bytes; the limit is {limit} bytes")
    return size


class MalformedJson(Exception):
    """The body is not valid JSON (answered 400 by the caller)."""


class NeedsGeneralReader(Exception):
    """The body is not the plain ``{"requests": [...]}`` msgspec reads: the general reader judges it."""


_HEAD = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"requests"[ \t\n\r]*:[ \t\n\r]*\[')
_TAIL = re.compile(rb"\][ \t\n\r]*\}[ \t\n\r]*\Z")
_EDGE_BYTES = 4096
_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])
_ELEMENT = msgspec.json.Decoder()
_NO_ELEMENT = msgspec.Raw()
_RELEASE_BYTES = 32 << 20
"""Pages of the mapped body behind the reader are handed back every this many bytes: memory stays
bounded (the page cache keeps them; nothing is read twice)."""


def iter_request_elements(raw: BinaryIO) -> Iterator[tuple[Any, bytes]]:
    """Each element of ``{"requests": [...]}`` with its JSON text on one line, read by msgspec.

    Raises :class:`NeedsGeneralReader` (before or between elements) when the body has any other shape,
    is not valid JSON, or holds what msgspec refuses and ``json`` may not (``NaN``, a lone surrogate
    escape, invalid UTF-8): the caller starts again with :func:`iter_batch_requests`.
    """
    size = os.fstat(raw.fileno()).st_size
    if size == 0:
        raise NeedsGeneralReader
    with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        head = _HEAD.match(mapped, 0, min(size, _EDGE_BYTES))
        tail = _TAIL.search(mapped, max(0, size - _EDGE_BYTES))
        if head is None or tail is None or tail.start() < head.end() - 1:
            raise NeedsGeneralReader
        view = memoryview(mapped)
        elements: list[msgspec.Raw] = []
        element = _NO_ELEMENT
        try:
            try:
                elements = _ELEMENTS.decode(view[head.end() - 1 : tail.start() + 1])
            except msgspec.DecodeError:
                raise NeedsGeneralReader from None
            consumed = released = 0  # bytes of elements read (a lower bound of the offset), handed back
            for index, element in enumerate(elements):
                elements[index] = _NO_ELEMENT  # the mapping closes only once no element holds it
                try:
                    item = _ELEMENT.decode(element)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    raise NeedsGeneralReader from None
                line = bytes(element)
                element = _NO_ELEMENT
                consumed += len(line)
                if b"\n" in line or b"\r" in line:  # whitespace between tokens: one line on disk
                    line = msgspec.json.encode(item)
                yield item, line
                behind = (head.end() + consumed) // mmap.PAGESIZE * mmap.PAGESIZE
                if behind - released >= _RELEASE_BYTES:
                    mapped.madvise(mmap.MADV_DONTNEED, released, behind - released)
                    released = behind
        finally:  # no element may hold the mapping when it closes, however the reading ended
            element = _NO_ELEMENT
            elements.clear()
            view.release()


class _JsonCursor:
    """A read cursor over a UTF-8 JSON file that decodes one value at a time in bounded memory."""

    def __init__(self, raw: BinaryIO, chunk_size: int = READ_CHUNK) -> None:
        self._raw = raw
        self._chunk_size = chunk_size
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._offset = 0  # characters dropped from the front of _buf, for error positions
        self._eof = False

    def _fill(self, at_least: int) -> bool:
        """Append more input; returns False at end of file."""
        if self._eof:
            return False
        if self._pos:
            self._offset += self._pos
            self._buf = self._buf[self._pos :]
            self._pos = 0
        data = self._raw.read(max(self._chunk_size, at_least))
        try:
            self._buf += self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise MalformedJson(f"body is not valid UTF-8 ({exc.reason})") from None
        if not data:
            self._eof = True
        return bool(data)

    def peek(self) -> str | None:
        """The next non-whitespace character (not consumed), or None at end of input."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill(0):
                return None

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            where = "end of input" if found is None else repr(found)
            raise MalformedJson(f"expected {char!r} at character {self._offset + self._pos}, found {where}")
        self._pos += 1

    def value(self) -> Any:
        """Decode the next JSON value, reading more input while it is incomplete."""
        if self.peek() is None:
            raise MalformedJson("unexpected end of input")
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                near_end = exc.pos >= len(self._buf) - _TRUNCATION_MARGIN
                truncated = near_end or exc.msg.startswith("Unterminated string")
                if truncated and self._fill(len(self._buf)):  # grow geometrically: linear overall
                    continue
                raise MalformedJson(f"{exc.msg} at character {self._offset + exc.pos}") from None
            at_buffer_end = end >= len(self._buf)
            if at_buffer_end and isinstance(value, int | float) and self._fill(0):
                continue  # a number may continue in the next chunk
            self._pos = end
            return value


def iter_batch_requests(raw: BinaryIO, chunk_size: int = READ_CHUNK) -> Iterator[Any]:
    """Yield the elements of ``{"requests": [...]}`` one at a time; 400 for any other shape.

    Raises ApiError (400) for unknown top-level keys or a missing/non-list ``requests``, and
    MalformedJson for syntax errors.
    """
    cursor = _JsonCursor(raw, chunk_size)
    if cursor.peek() != "{":
        cursor.value()  # a syntax error surfaces here; otherwise it is valid JSON of the wrong type
        raise invalid_request("body: Input should be a valid dictionary")
    cursor.expect("{")
    seen_requests = False
    first_key = True
    while cursor.peek() != "}":
        if not first_key:
            cursor.expect(",")
        first_key = False
        key = cursor.value()
        if not isinstance(key, str):
            raise MalformedJson("object keys must be strings")
        cursor.expect(":")
        if key != "requests":
            raise invalid_request(f"{key}: Extra inputs are not permitted")
        if seen_requests:
            raise invalid_request("requests: given more than once")
        seen_requests = True
        yield from _iter_array(cursor)
    cursor.expect("}")
    if cursor.peek() is not None:
        raise MalformedJson("extra data after the JSON object")
    if not seen_requests:
        raise invalid_request("requests: Field required")


def _iter_array(cursor: _JsonCursor) -> Iterator[Any]:
    if cursor.peek() != "[":
        cursor.value()
        raise invalid_request("requests: Input should be a valid list")
    cursor.expect("[")
    if cursor.peek() == "]":
        cursor.expect("]")
        return
    while True:
        yield cursor.value()
        if cursor.peek() == "]":
            cursor.expect("]")
            return
        cursor.expect(",")
