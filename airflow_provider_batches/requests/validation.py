"""Line-by-line validation: each request read as the API would, checked against the Messages request
and the batch's rules, its custom_id remembered in bounded memory to catch duplicates."""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import msgspec

from airflow_provider_batches.batch_ids import CUSTOM_ID_PATTERN
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.identity import custom_id_hash
from airflow_provider_batches.message_params import params_problems
from airflow_provider_batches.proof import PROOF_PREFIX, is_proof_id
from airflow_provider_batches.requests.limits import (
    ENVELOPE_BYTES,
    MAX_LINE_BYTES,
    READ_CHUNK_BYTES,
    too_long,
)
from airflow_provider_batches.requests.reading import SourceLine

MAX_REPORTED_PROBLEMS = 20
MAX_NESTING_DEPTH = 500
"""Arrays and objects nested deeper than this are refused (no real request comes close)."""
UNIQUE_KEY_BITS = 64
"""custom_ids are compared by a key of this many bits (tests shrink it to force collisions)."""

_ENVELOPE_KEYS = frozenset({"custom_id", "params"})
_BOM = b"\xef\xbb\xbf"
_KEY_COLON = re.compile(rb'"\s*:')
_CUSTOM_ID_HINT = re.compile(rb'"custom_id"\s*:\s*"([a-zA-Z0-9_-]{1,64})"')


class LineSource(Protocol):
    """What validation needs of a request source: its lines again (duplicates), and its name."""

    def iter_lines(self, max_line_bytes: int = ...) -> Iterator[SourceLine]: ...

    def describe(self) -> str: ...


class Checked(NamedTuple):
    """A valid request; ``encoded`` is what goes into the body (a file's own bytes when unchanged).

    ``id_hash`` is :func:`~airflow_provider_batches.identity.custom_id_hash` of its custom_id.
    """

    request: dict[str, Any]
    encoded: bytes
    id_hash: int


class _KeySet:
    """A set of non-zero 64-bit keys in one flat array (open addressing): 8-16 bytes per key.

    A Python set of ints costs about 60 bytes per key, a dict of digests to locations about 140.
    """

    def __init__(self) -> None:
        self._table = array("Q", bytes(8 * 1024))
        self._mask = 1023
        self._count = 0

    def add(self, key: int) -> bool:
        """Add ``key``; False when it was already there."""
        table, mask = self._table, self._mask
        index = key & mask
        while slot := table[index]:
            if slot == key:
                return False
            index = (index + 1) & mask
        table[index] = key
        self._count += 1
        if 2 * self._count > mask:  # keep the table at most half full: probes stay short
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        self._table = table = array("Q", bytes(16 * len(old)))
        self._mask = mask = 2 * len(old) - 1
        for key in old:  # the keys are distinct: each goes to its first free slot
            if key:
                index = key & mask
                while table[index]:
                    index = (index + 1) & mask
                table[index] = key


@dataclass
class RequestChecker:
    """Checks requests one at a time, remembering custom_ids to catch duplicates across the job.

    custom_ids are remembered as 64-bit keys in bounded memory. Two ids with one key are a duplicate
    almost always, but not surely: their keys go to ``suspects``, and :func:`confirm_duplicates`
    compares the ids themselves in one more pass (a checker with ``exact_keys``), naming both lines.
    """

    default_model: str | None
    exact_keys: frozenset[int] | None = None
    #: Applied to every valid request's params before they are checked (an output schema's form):
    #: ValueError names a request that cannot take it.
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    invalid_count: int = 0
    suspects: set[int] = field(default_factory=set)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    _keys: _KeySet = field(default_factory=_KeySet)
    _exact: dict[str, str] = field(default_factory=dict)
    _key_mask: int = field(default_factory=lambda: (1 << UNIQUE_KEY_BITS) - 1)

    def check(self, line: SourceLine) -> Checked | None:
        """The request, with the default model filled in; None (and its problems noted) when it is bad."""
        if line.size is not None:
            self.note(line.location, custom_id_hint(line.raw), too_long(MAX_LINE_BYTES + ENVELOPE_BYTES))
            return None
        if line.raw is not None:
            value, problem = parse_line(line.raw)
            if problem is not None:
                self.note(line.location, custom_id_hint(line.raw), problem)
                return None
        else:
            value = line.value
            if problem := json_value_problem(value, ""):
                self.note(line.location, inline_custom_id(value), problem)
                return None
        if type(value) is not dict and not isinstance(value, Mapping):
            self.note(line.location, None, f"must be a JSON object, got {type(value).__name__}")
            return None
        custom_id = value.get("custom_id")
        shown_id = custom_id if isinstance(custom_id, str) else None
        problem = _envelope_problem(value)
        if problem:
            self.note(line.location, shown_id, problem)
            return None
        params = value["params"]
        if type(params) is not dict and not isinstance(params, Mapping):
            self.note(line.location, shown_id, f"params must be an object, got {type(params).__name__}")
            return None
        if line.raw is None or "model" not in params:  # never change the caller's own objects
            params = dict(params)
            if "model" not in params and self.default_model is not None:
                params["model"] = self.default_model
        if self.rewrite is not None and isinstance(params.get("model"), str):
            try:
                params = self.rewrite(params)
            except ValueError as exc:
                self.note(line.location, shown_id, str(exc))
                return None
        if problems := params_problems(params):
            self.note(line.location, shown_id, *problems)
            return None
        assert isinstance(custom_id, str)
        id_hash = custom_id_hash(custom_id)
        key = (id_hash & self._key_mask) or 1
        if self.exact_keys is None:
            if not self._keys.add(key):
                self.suspects.add(key)
        elif key in self.exact_keys:
            if (first := self._exact.get(custom_id)) is not None:
                self.duplicates.append((line.location, custom_id, first))
                return None
            self._exact[custom_id] = line.location
        request = {"custom_id": custom_id, "params": params}
        if line.raw is not None and "model" in value["params"] and self.rewrite is None:
            return Checked(request, line.raw, id_hash)
        encoded = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
        return Checked(request, encoded, id_hash)

    def note(self, location: str, custom_id: str | None, *messages: str) -> None:
        """Record the problems of one request (all of them, listed up to MAX_REPORTED_PROBLEMS)."""
        self.invalid_count += 1
        self.problem_count += len(messages)
        where = f"{location} (custom_id {custom_id!r})" if custom_id else location
        for message in messages:
            if len(self.problems) < MAX_REPORTED_PROBLEMS:
                self.problems.append(f"{where}: {message}")

    def error(self, source: LineSource) -> RequestValidationError:
        more = self.problem_count - len(self.problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return RequestValidationError(
            f"{self.invalid_count} invalid request(s) in {source.describe()}; "
            f"nothing was sent:\n{listing}{tail}"
        )


def confirm_duplicates(
    source: LineSource, checker: RequestChecker, max_line_bytes: int, *, upto: int | None = None
) -> None:
    """Note each real duplicate among ``checker.suspects``, naming both lines: one more pass.

    Runs only when two custom_ids shared a key (on bad input, or one pair in ~10^7 at a million ids);
    the ids whose key is suspect are compared whole, so the check stays exact.
    """
    exact = RequestChecker(checker.default_model, exact_keys=frozenset(checker.suspects))
    checker.suspects.clear()
    for line in source.iter_lines(max_line_bytes):
        if upto is not None and line.number > upto:
            break
        exact.check(line)
    for location, custom_id, first in exact.duplicates:
        checker.note(location, custom_id, f"custom_id duplicates the one at {first}")


_fast_decode = msgspec.json.Decoder().decode
_fast_encode = msgspec.json.Encoder().encode
_TOO_DEEP = f"is nested more than {MAX_NESTING_DEPTH} levels deep: flatten the data"


class _DuplicateKey(ValueError):
    pass


def parse_line(raw: bytes) -> tuple[Any, str | None]:
    """A file line's value, or the reason it is not a request the API would read as we do.

    msgspec (fast) reads almost every line; anything it refuses or may have read differently from
    the API (a duplicate key keeps only its last value) is read again by :func:`_parse_strictly`.
    """
    if raw.startswith(_BOM):
        return (
            None,
            "starts with a UTF-8 byte order mark (BOM), which is not JSON: save it as UTF-8 without BOM",
        )
    try:
        value = _fast_decode(raw)
    except RecursionError:
        return None, _TOO_DEEP
    except (msgspec.DecodeError, UnicodeDecodeError):  # also numbers out of range such as 1e400
        return _parse_strictly(raw)
    if _may_repeat_a_key(raw, value):
        return _parse_strictly(raw)
    if raw.count(b"{") + raw.count(b"[") >= MAX_NESTING_DEPTH:  # else it cannot be that deep
        problem = json_value_problem(value, "")
        if problem:
            return None, problem
    return value, None


def _may_repeat_a_key(raw: bytes, value: Any) -> bool:
    """False when ``raw`` surely has no key twice in one object (the decoded ``value`` kept one).

    Every key ends in ``"`` then ``:`` (whitespace between is allowed); the re-encoding of ``value``
    has each key once and the same string contents, so equal counts of that pattern mean no
    duplicates. Byte counts do it when no ``"`` is followed by whitespace (almost every line);
    ``\\u0022`` (a quote written as an escape) would skew the count, so it takes the slow path. A line
    equal to that re-encoding (a compact writer's, as most are) needs no count: one comparison.
    """
    encoded = _fast_encode(value)
    if encoded == raw:  # the line is the compact encoding of a decoded value: no key twice (most files)
        return False
    if b"\\u0022" in raw:
        return True
    if b'" ' in raw or b'"\t' in raw or b'"\r' in raw:
        return len(_KEY_COLON.findall(raw)) != len(_KEY_COLON.findall(encoded))
    return raw.count(b'":') != encoded.count(b'":')


def _parse_strictly(raw: bytes) -> tuple[Any, str | None]:
    """The slow, exact reading: names duplicate keys, NaN/Infinity, 1e400 and lone surrogates."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            None,
            f"is not valid JSON (not utf-8: {exc.reason} at byte {exc.start}): save the file as UTF-8",
        )
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except RecursionError:
        return None, _TOO_DEEP
    except _DuplicateKey as exc:
        return None, str(exc)
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:
        return None, f"is not valid JSON ({exc})"
    return value, json_value_problem(value, "")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        key = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _DuplicateKey(
            f"has the key {key!r} twice in one object: keep one (the API could read the other value)"
        )
    return value


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: the API would refuse the whole batch body for one such line."""
    raise ValueError(f"{name} is not a JSON number: use a finite number or null")


def json_value_problem(value: Any, path: str) -> str | None:
    """The first value JSON cannot carry as the API reads it, named by its dotted path; None if all can.

    Catches what ``json.dumps`` would fail on or send wrongly: non-JSON types (datetime, set, bytes),
    non-string keys, NaN/Infinity (also 1e400, read as infinity), lone surrogates, deep nesting.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        named = where or "the request"
        kind = type(item)
        if kind is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return (
                        f"{named} holds a lone surrogate ({item[exc.start]!r}), which is not valid "
                        "Unicode: fix the text's encoding"
                    )
        elif item is None or kind is bool or kind is int:
            continue
        elif kind is float:
            if not math.isfinite(item):
                return (
                    f"{named} is {item!r}, which is not a JSON number (1e400 reads as inf): use a finite one"
                )
        elif isinstance(item, (Mapping, list, tuple)):
            if depth >= MAX_NESTING_DEPTH:
                return f"{named} {_TOO_DEEP}"
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"{named} has the key {key!r}, which is not a string: JSON keys are strings"
                    stack.append((child, f"{where}.{key}" if where else key, depth + 1))
            else:
                stack.extend(
                    (child, f"{where}.{i}" if where else str(i), depth + 1) for i, child in enumerate(item)
                )
        else:
            return (
                f"{named} is a {kind.__name__}, which is not JSON: convert it to a string, number, "
                "list or object (a datetime to an ISO 8601 string, a set to a list)"
            )
    return None


def custom_id_hint(raw: bytes | None) -> str | None:
    """The custom_id of a line that cannot be read whole, when its start names one."""
    match = _CUSTOM_ID_HINT.search(raw[:READ_CHUNK_BYTES]) if raw else None
    return match.group(1).decode() if match else None


def inline_custom_id(value: Any) -> str | None:
    custom_id = value.get("custom_id") if isinstance(value, Mapping) else None
    return custom_id if isinstance(custom_id, str) else None


def _envelope_problem(value: Mapping[str, Any]) -> str | None:
    if not value.keys() <= _ENVELOPE_KEYS:
        extra = sorted(map(str, set(value) - _ENVELOPE_KEYS))
        return f"unknown key(s) {', '.join(map(repr, extra))}: a request has only 'custom_id' and 'params'"
    custom_id = value.get("custom_id")
    if custom_id is None:
        return "custom_id is missing"
    if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.fullmatch(custom_id):
        return (
            f"custom_id {custom_id!r} is invalid: use 1 to 64 letters, digits, '_' or '-' "
            "(pattern ^[a-zA-Z0-9_-]{1,64}$, nothing else, not even a trailing newline)"
        )
    if is_proof_id(custom_id):
        return (
            f"custom_id {custom_id!r} starts with {PROOF_PREFIX!r}, which is reserved for the proof request "
            "the provider adds to each batch: rename it"
        )
    if "params" not in value:
        return "params is missing"
    return None
