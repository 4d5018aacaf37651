"""A JSON object checked as it streams, in constant memory, keeping only a few short values.

For result lines too long to hold (:mod:`.big_lines`): the bytes arrive in pieces of any size; the
scanner checks that together they are exactly one valid JSON object and keeps the values at the
paths it is asked for (``custom_id``, ``result.type``...), each at most :data:`MAX_KEPT_BYTES`. Long
strings are skipped by a regular expression (C speed); only structure and escapes cost Python steps.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Collection
from typing import Any

MAX_KEPT_BYTES = 1024
"""The longest key or kept value held; longer ones are marked too long (never a match)."""
MAX_DEPTH = 1000
MAX_TOKEN_BYTES = 1100
"""The longest number or literal accepted (no real result has a longer one)."""

_STRING_RUN = re.compile(rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+')
"""String content with its valid escapes, matched in one C call (atomic: no backtracking)."""
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_TOKEN = re.compile(rb"[-+0-9.eEa-z]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {b"true": True, b"false": False, b"null": None}
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')
_HEX = frozenset(b"0123456789abcdefABCDEF")
TOO_LONG = object()
"""A kept value (or key) longer than :data:`MAX_KEPT_BYTES`."""

# What the scanner expects next.
_TOP, _VALUE, _KEY_OR_END, _KEY, _COLON, _COMMA_OR_END_OBJ, _VALUE_OR_END, _COMMA_OR_END_ARR, _DONE = range(9)


class JsonScanError(ValueError):
    """The bytes are not one valid JSON object; the message says what and where."""


class JsonScanner:
    """Feed the pieces of one JSON object with :meth:`feed`, then :meth:`end`; :attr:`kept` holds the
    values found at ``paths`` (tuples of keys; a path seen twice is an error: the value is ambiguous)."""

    def __init__(self, paths: Collection[tuple[str, ...]]) -> None:
        self.paths = frozenset(paths)
        self.kept: dict[tuple[str, ...], Any] = {}
        self._expect = _TOP
        self._stack: list[tuple[bool, str | None]] = []  # open containers: (is an array, key in parent)
        self._key: str | None = None  # in an object: the key of the value being read
        self._in_string = False
        self._string_is_key = False
        self._raw: bytearray | None = None  # the current key or kept value, undecoded
        self._raw_too_long = False
        self._escape = b""  # an escape cut by a piece border
        self._token = bytearray()  # a number or literal cut by a piece border
        self.position = 0  # bytes scanned before the current piece: where an error is
        self._utf8 = codecs.getincrementaldecoder("utf-8")()  # JSON text is UTF-8, strings included

    # -- paths ------------------------------------------------------------------------------------

    def _path(self) -> tuple[str, ...] | None:
        if self._key is None or any(is_array for is_array, _ in self._stack):
            return None
        return (*(key for _, key in self._stack[1:] if key is not None), self._key)

    def _keep(self, value: Any) -> None:
        path = self._path()
        if path is not None and path in self.paths:
            if path in self.kept:
                raise self._error(f"{'.'.join(path)} appears twice")
            self.kept[path] = value

    def _after_value(self) -> None:
        if not self._stack:
            self._expect = _DONE
        else:
            self._expect = _COMMA_OR_END_ARR if self._stack[-1][0] else _COMMA_OR_END_OBJ

    # -- scanning ---------------------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        data = bytes(data)
        try:
            self._utf8.decode(data)  # checked piece by piece, at C speed; the text is dropped
        except UnicodeDecodeError:
            raise self._error("bytes that are not UTF-8") from None
        i, n = 0, len(data)
        while i < n:
            if self._in_string:
                i = self._scan_string(data, i, n)
            elif self._token:
                i = self._scan_token(data, i, n)
            else:
                i = _WHITESPACE.match(data, i).end()  # type: ignore[union-attr]
                if i < n:
                    i = self._structure(data[i], i)
        self.position += n

    def end(self) -> dict[tuple[str, ...], Any]:
        """The kept values, once the whole object was fed; JsonScanError if it is not complete."""
        if self._token:
            self._finish_token()
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise self._error("bytes that are not UTF-8") from None
        if self._in_string or self._expect != _DONE:
            raise self._error("the JSON object is cut off")
        return self.kept

    def _structure(self, char: int, i: int) -> int:
        expect = self._expect
        if char == 0x22 and expect in (_KEY_OR_END, _KEY, _VALUE, _VALUE_OR_END):  # "
            self._in_string = True
            self._string_is_key = expect in (_KEY_OR_END, _KEY)
            keep = self._string_is_key or self._path() in self.paths
            self._raw = bytearray() if keep else None
            return i + 1
        if char in b"{[" and expect in (_TOP, _VALUE, _VALUE_OR_END):
            if expect == _TOP and char != 0x7B:
                raise self._error("a result line must be an object", i)
            if len(self._stack) >= MAX_DEPTH:
                raise self._error(f"nested more than {MAX_DEPTH} levels deep", i)
            self._stack.append((char == 0x5B, self._key))
            self._key = None
            self._expect = _KEY_OR_END if char == 0x7B else _VALUE_OR_END
            return i + 1
        if (char == 0x7D and expect in (_KEY_OR_END, _COMMA_OR_END_OBJ)) or (
            char == 0x5D and expect in (_VALUE_OR_END, _COMMA_OR_END_ARR)
        ):
            _, self._key = self._stack.pop()
            self._after_value()
            return i + 1
        if char == 0x3A and expect == _COLON:  # :
            self._expect = _VALUE
            return i + 1
        if char == 0x2C and expect in (_COMMA_OR_END_OBJ, _COMMA_OR_END_ARR):  # ,
            self._expect = _KEY if expect == _COMMA_OR_END_OBJ else _VALUE
            self._key = None
            return i + 1
        if expect in (_VALUE, _VALUE_OR_END) and char in b"-0123456789tfn":
            self._token = bytearray((char,))
            return i + 1
        raise self._error(f"unexpected {chr(char)!r}", i)

    def _scan_token(self, data: bytes, i: int, n: int) -> int:
        end = _TOKEN.match(data, i).end()  # type: ignore[union-attr]
        self._token += data[i:end]
        if len(self._token) > MAX_TOKEN_BYTES:
            raise self._error(f"a number or literal longer than {MAX_TOKEN_BYTES} bytes", i)
        if end < n:
            self._finish_token()
        return end

    def _finish_token(self) -> None:
        token, self._token = bytes(self._token), bytearray()
        if token in _LITERALS:
            value: Any = _LITERALS[token]
        elif _NUMBER.fullmatch(token):
            value = json.loads(token)
        else:
            raise self._error(f"{token[:40]!r} is not a JSON value")
        self._keep(value)
        self._after_value()

    def _scan_string(self, data: bytes, i: int, n: int) -> int:
        if self._escape:
            return self._continue_escape(data, i, n)
        stop = _STRING_RUN.match(data, i).end()  # type: ignore[union-attr]
        self._take(data, i, stop)
        if stop == n:
            return n
        char = data[stop]
        if char == 0x22:
            self._end_string()
            return stop + 1
        if char == 0x5C:  # a backslash
            self._escape = b"\\"
            return self._continue_escape(data, stop + 1, n)
        raise self._error("a control character inside a string", stop)

    def _continue_escape(self, data: bytes, i: int, n: int) -> int:
        while i < n:
            self._escape += data[i : i + 1]
            i += 1
            escape = self._escape
            if len(escape) == 2:
                if escape[1] == 0x75:  # u: four hex digits follow
                    continue
                if escape[1] not in _SIMPLE_ESCAPES:
                    raise self._error("an invalid escape", i - 1)
                break
            if escape[-1] not in _HEX:
                raise self._error("an invalid \\u escape", i - 1)
            if len(escape) == 6:
                break
        else:
            return n
        self._take(self._escape, 0, len(self._escape))
        self._escape = b""
        return i

    def _take(self, data: bytes, start: int, stop: int) -> None:
        raw = self._raw
        if raw is None or stop <= start or self._raw_too_long:
            return
        if len(raw) + stop - start > MAX_KEPT_BYTES:
            self._raw_too_long = True
            raw.clear()
        else:
            raw += data[start:stop]

    def _end_string(self) -> None:
        self._in_string = False
        raw, self._raw = self._raw, None
        value: Any = None
        if raw is not None:
            if self._raw_too_long:
                value, self._raw_too_long = TOO_LONG, False
            else:
                try:
                    value = json.loads(b'"' + bytes(raw) + b'"')
                except ValueError:
                    raise self._error("a string that is not valid UTF-8") from None
        if self._string_is_key:
            self._key = value if isinstance(value, str) else "\x00too-long"
            self._expect = _COLON
            return
        self._keep(value)
        self._after_value()

    def _error(self, what: str, at: int = 0) -> JsonScanError:
        return JsonScanError(f"is not valid JSON: {what} (near byte {self.position + at:,})")
