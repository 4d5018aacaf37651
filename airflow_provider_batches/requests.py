"""Batch requests: where they come from, how they are checked, encoded and split into batches.

Requests are streamed, never loaded whole: an inline list for small jobs, or a JSONL file at any
``ObjectStoragePath`` (``file://``, ``s3://``, ``gs://``... optionally ``.gz``) for big ones. One
pass validates every line, fingerprints the job and plans how to split it into batches that fit
the API's limits, noting where each batch starts (byte offset and line); each batch's body is then
streamed from there, chunk by chunk, so every input byte is read twice in all (once to validate, once
to send), whatever the number of batches.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import zlib
from array import array
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, cast

import msgspec

from airflow_provider_batches.batch_ids import CUSTOM_ID_PATTERN as CUSTOM_ID_PATTERN
from airflow_provider_batches.bodies import BatchBody
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.identity import CustomIdDigest, custom_id_hash
from airflow_provider_batches.message_params import params_problems
from airflow_provider_batches.proof import (
    PROOF_PREFIX,
    PROOF_RESERVED_BYTES,
    PROOF_RESERVED_REQUESTS,
    is_proof_id,
    proof_request,
)

MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BYTES = 256_000_000
"""The create body's limit: "A Message Batch is limited to either 100,000 Message requests or 256 MB
in size, whichever is reached first" (platform.claude.com/docs/en/build-with-claude/batch-processing,
Batch limitations; read 2026-12-04). A request line longer than it fits in no batch."""
MAX_REPORTED_PROBLEMS = 20
MAX_NESTING_DEPTH = 500
"""Arrays and objects nested deeper than this are refused (no real request comes close)."""
BODY_CHUNK_BYTES = 1 << 20
READ_CHUNK_BYTES = 1 << 20

_BODY_START = b'{"requests":['
_BODY_END = b"]}"
_ENVELOPE_BYTES = len(_BODY_START) + len(_BODY_END)
MAX_LINE_BYTES = MAX_BATCH_BYTES - _ENVELOPE_BYTES - PROOF_RESERVED_BYTES
"""A longer line fits in no batch (beside its proof request): it is refused while it streams, never
held whole."""

_ENVELOPE_KEYS = frozenset({"custom_id", "params"})
_BOM = b"\xef\xbb\xbf"
_KEY_COLON = re.compile(rb'"\s*:')
_CUSTOM_ID_HINT = re.compile(rb'"custom_id"\s*:\s*"([a-zA-Z0-9_-]{1,64})"')


UNIQUE_KEY_BITS = 64
"""custom_ids are compared by a key of this many bits (tests shrink it to force collisions)."""


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


class RequestSource:
    """Where a job's requests come from: an inline list or a JSONL file at an ObjectStoragePath URI.

    :param requests: inline ``[{"custom_id": ..., "params": {...}}, ...]``.
    :param requests_path: a JSONL file URI (``.gz`` is decompressed); a bare path means ``file://``.
    :param requests_conn_id: the connection for the path's storage (e.g. an ``aws`` connection).
    :param model: fills ``params.model`` in requests that have none.
    """

    def __init__(
        self,
        *,
        requests: Sequence[Mapping[str, Any]] | None = None,
        requests_path: str | None = None,
        requests_conn_id: str | None = None,
        model: str | None = None,
    ) -> None:
        if requests is not None and requests_path is not None:
            raise RequestValidationError("pass either requests or requests_path, not both")
        if requests is None and requests_path is None:
            raise RequestValidationError(
                "no requests: pass requests=[...] or requests_path='s3://.../file.jsonl'"
            )
        if requests_path is not None and (not isinstance(requests_path, str) or not requests_path.strip()):
            raise RequestValidationError(
                f"requests_path rendered to {requests_path!r}: give the URI of a JSONL file, "
                "e.g. 's3://bucket/requests/{{ ds }}.jsonl'"
            )
        if requests is not None and (
            isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence)
        ):
            raise RequestValidationError(
                f"requests must be a list of {{'custom_id', 'params'}} objects, got {type(requests).__name__}"
            )
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise RequestValidationError(
                f"model must be a model name like 'claude-sonnet-4-6', got {model!r}"
            )
        self.requests = requests
        self.requests_path = requests_path.strip() if requests_path else None
        self.requests_conn_id = requests_conn_id
        self.model = model

    def describe(self) -> str:
        return self.requests_path or f"{len(self.requests or ())} inline requests"

    def iter_lines(
        self, max_line_bytes: int = MAX_LINE_BYTES, *, offset: int = 0, first_line: int = 1
    ) -> Iterator[SourceLine]:
        """Every non-blank request, in order, without parsing file lines: the one reader of request
        files (count tokens, create, re-drive), with its bounds.

        Starts at byte ``offset`` (numbered from ``first_line``), or at inline index ``offset``: a
        plain file seeks there, a ``.gz`` decompresses up to it (its expansion bounded: see
        :class:`BoundedGzip`). A file line longer than ``max_line_bytes`` comes back cut (``size``
        set, more than the limit) as soon as it passes the limit, and is the last: nothing after it
        is read.
        """
        if self.requests is not None:
            for index in range(offset, len(self.requests)):
                yield SourceLine(index, index, value=self.requests[index])
            return
        number = first_line - 1
        with self._open() as stream:
            try:
                if offset:
                    stream.seek(offset)
                for raw, size, start, lines in _read_lines(stream, max_line_bytes, offset):
                    number += lines
                    if size > max_line_bytes:
                        yield SourceLine(number, start, raw=raw, size=size)
                        return  # not read further: the line may never end (/dev/zero)
                    if raw := raw.strip():
                        yield SourceLine(number, start, raw=raw)
            except ExpansionBoundError as exc:
                raise RequestValidationError(
                    f"requests_path {self.requests_path!r} refused at line {number + 1}: {exc}"
                ) from None
            except (OSError, EOFError, zlib.error) as exc:  # e.g. a ".gz" that is not gzip, or truncated
                raise RequestValidationError(
                    f"requests_path {self.requests_path!r} cannot be read at line {number + 1}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    def subset(self, custom_ids: Collection[str], *, label: str = "re-driven") -> RequestSource:
        """Only the requests whose custom_id is in ``custom_ids``, in input order, file lines as they
        are: what a follow-up round (re-drive) submits. Memory: the given ids, nothing per line."""
        return _SubsetSource(self, custom_ids, label)

    def iter_requests(self) -> Iterator[dict[str, Any]]:
        """Validated requests with the default model filled in, streamed; raises at the first bad one."""
        checker = RequestChecker(self.model)
        for line in self.iter_lines():
            checked = checker.check(line)
            if checked is not None and checker.suspects:
                _confirm_duplicates(self, checker, MAX_LINE_BYTES, upto=line.number)
                if checker.problem_count:
                    checked = None
            if checked is None:
                raise checker.error(self)
            yield checked.request

    def _open(self) -> IO[bytes]:
        uri = self.requests_path or ""
        if "://" not in uri:
            uri = f"file://{uri}"
        try:
            if uri.startswith("file://"):
                # Opened as ObjectStoragePath would (``~`` expanded, a relative path from the working
                # directory), without its first use's cost: importing every provider's filesystems,
                # 0.11 s of CPU in each task process.
                stream: IO[bytes] = open(os.path.expanduser(uri[len("file://") :]), "rb")  # noqa: SIM115
            else:
                from airflow.sdk import ObjectStoragePath

                stream = ObjectStoragePath(uri, conn_id=self.requests_conn_id).open("rb")
        except Exception as exc:
            raise RequestValidationError(
                f"requests_path {self.requests_path!r} cannot be read: {type(exc).__name__}: {exc}"
            ) from exc
        if uri.endswith(".gz"):
            return BoundedGzip(stream)  # type: ignore[return-value]
        return stream


class _CustomIdOnly(msgspec.Struct):
    custom_id: str = ""


_decode_custom_id = msgspec.json.Decoder(_CustomIdOnly).decode


class _SubsetSource(RequestSource):
    """A source's requests filtered by custom_id (see :meth:`RequestSource.subset`)."""

    def __init__(self, base: RequestSource, custom_ids: Collection[str], label: str) -> None:
        self.requests = base.requests
        self.requests_path = base.requests_path
        self.requests_conn_id = base.requests_conn_id
        self.model = base.model
        self._base = base
        self._ids = custom_ids
        self._label = label

    def describe(self) -> str:
        return f"{len(self._ids)} {self._label} requests of {self._base.describe()}"

    def iter_lines(
        self, max_line_bytes: int = MAX_LINE_BYTES, *, offset: int = 0, first_line: int = 1
    ) -> Iterator[SourceLine]:
        for line in self._base.iter_lines(max_line_bytes, offset=offset, first_line=first_line):
            if line.raw is not None:
                try:
                    custom_id: Any = _decode_custom_id(line.raw).custom_id
                except (msgspec.DecodeError, msgspec.ValidationError):
                    yield line  # validated before, so the file changed: the checks name this line
                    continue
            else:
                custom_id = line.value.get("custom_id") if isinstance(line.value, Mapping) else None
            if custom_id in self._ids:
                yield line


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
    almost always, but not surely: their keys go to ``suspects``, and :func:`_confirm_duplicates`
    compares the ids themselves in one more pass (a checker with ``exact_keys``), naming both lines.
    """

    default_model: str | None
    exact_keys: frozenset[int] | None = None
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
            self.note(line.location, _custom_id_hint(line.raw), _too_long(MAX_LINE_BYTES + _ENVELOPE_BYTES))
            return None
        if line.raw is not None:
            value, problem = _parse_line(line.raw)
            if problem is not None:
                self.note(line.location, _custom_id_hint(line.raw), problem)
                return None
        else:
            value = line.value
            if problem := _json_value_problem(value, ""):
                self.note(line.location, _inline_custom_id(value), problem)
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
        if line.raw is not None and "model" in value["params"]:
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

    def error(self, source: RequestSource) -> RequestValidationError:
        more = self.problem_count - len(self.problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return RequestValidationError(
            f"{self.invalid_count} invalid request(s) in {source.describe()}; "
            f"nothing was sent:\n{listing}{tail}"
        )


def _confirm_duplicates(
    source: RequestSource, checker: RequestChecker, max_line_bytes: int, *, upto: int | None = None
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


def _read_lines(stream: IO[bytes], limit: int, offset: int = 0) -> Iterator[tuple[bytes, int, int, int]]:
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


_API_REQUEST_INDEX = re.compile(r"\brequests\.(\d+)((?:\.[A-Za-z0-9_]+)*)")
_fast_decode = msgspec.json.Decoder().decode
_fast_encode = msgspec.json.Encoder().encode
_TOO_DEEP = f"is nested more than {MAX_NESTING_DEPTH} levels deep: flatten the data"


class _DuplicateKey(ValueError):
    pass


def _parse_line(raw: bytes) -> tuple[Any, str | None]:
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
        problem = _json_value_problem(value, "")
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
    return value, _json_value_problem(value, "")


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


def _json_value_problem(value: Any, path: str) -> str | None:
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


def _custom_id_hint(raw: bytes | None) -> str | None:
    """The custom_id of a line that cannot be read whole, when its start names one."""
    match = _CUSTOM_ID_HINT.search(raw[:READ_CHUNK_BYTES]) if raw else None
    return match.group(1).decode() if match else None


def _inline_custom_id(value: Any) -> str | None:
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


# -- jobs: one validation pass, then batches streamed from the source -----------------------------


@dataclass(frozen=True)
class BatchSlice:
    """One batch of a job: requests ``start`` to ``start + count`` of the source.

    Its first request is at byte ``offset`` of the file (the inline index), on line ``first_line``:
    its body is read from there, not from the top.

    ``size`` is its body's length and ``sha256`` the digest of its encoded requests, checked again
    while the body streams so that a source changed in between is never submitted. ``ids_digest``
    identifies its set of custom_ids (:mod:`~airflow_provider_batches.identity`): the results
    transfer checks a batch's results against it.
    """

    index: int
    start: int
    count: int
    size: int
    sha256: str
    ids_digest: str = ""
    offset: int = 0
    first_line: int = 1


#: Lines named per model when a model check fails.
MODEL_LINES_SHOWN = 3


@dataclass
class ModelUsage:
    """Where a job uses a model, for the checks before spend that name lines: how many requests, the
    first few lines, and the line with the largest ``max_tokens``."""

    requests: int = 0
    lines: list[str] = field(default_factory=list)
    max_tokens: int = 0
    max_tokens_line: str = ""
    #: The first line that sets a non-default sampling parameter (temperature, top_p, top_k), and the
    #: first that asks for manual extended thinking (``thinking.type = "enabled"``): some models
    #: refuse them.
    sampling_line: str = ""
    manual_thinking_line: str = ""

    def add(self, line: SourceLine, custom_id: str, params: Mapping[str, Any]) -> None:
        self.requests += 1
        max_tokens = params["max_tokens"]
        first = len(self.lines) < MODEL_LINES_SHOWN
        sampling = not self.sampling_line and (
            params.get("temperature", 1) != 1 or "top_p" in params or "top_k" in params
        )
        thinking = params.get("thinking")
        manual = (
            not self.manual_thinking_line
            and isinstance(thinking, Mapping)
            and thinking.get("type") == "enabled"
        )
        if first or max_tokens > self.max_tokens or sampling or manual:  # the text only when kept
            where = f"{line.location} (custom_id {custom_id!r})"
            if first:
                self.lines.append(where)
            if max_tokens > self.max_tokens:
                self.max_tokens, self.max_tokens_line = max_tokens, where
            if sampling:
                self.sampling_line = where
            if manual:
                self.manual_thinking_line = where


@dataclass(frozen=True)
class PreparedJob:
    """A validated job: its size, fingerprint and split into batches that fit the API limits."""

    source: RequestSource
    request_count: int
    fingerprint: str
    slices: list[BatchSlice]
    requests_per_model: dict[str, int]
    #: One byte per request: 1 where the body needs it re-encoded (model filled in, inline request),
    #: 0 where a file line is sent as it is, without parsing it again.
    reencoded: bytes = b""
    #: Per model, where the job uses it (see :class:`ModelUsage`).
    model_usage: dict[str, ModelUsage] = field(default_factory=dict, compare=False)
    #: The line reader a finished body left off at, by the position it will read next: the next
    #: batch continues it (a ``.gz`` is not decompressed again from the top for each batch).
    _resume: dict[int, Iterator[SourceLine]] = field(default_factory=dict, compare=False, repr=False)

    def body(self, batch_slice: BatchSlice, proof_id: str | None = None) -> BatchBody:
        """The create body of one batch, streamed from the source again on every attempt; with
        ``proof_id``, the proof request (:mod:`~airflow_provider_batches.proof`) comes last, so the
        API's ``requests.N`` still names the job's own request N."""
        if proof_id is None:
            return BatchBody(lambda: self._chunks(batch_slice), batch_slice.count)
        proof = b"," + proof_request(proof_id, self.proof_model)
        return BatchBody(lambda: self._chunks(batch_slice, proof), batch_slice.count + 1)

    @property
    def proof_model(self) -> str:
        """The model the proof request asks: the job's most used one (a model the job may use)."""
        return max(sorted(self.requests_per_model), key=lambda model: self.requests_per_model[model])

    def locate(self, batch_slice: BatchSlice, index: int) -> tuple[str, str | None]:
        """Where request ``index`` of a batch's body came from: its line (or inline index) and custom_id.

        Re-reads the source up to that request: only for error messages, so the happy path keeps no map.
        """
        wanted = batch_slice.start + index
        lines = self.source.iter_lines(offset=batch_slice.offset, first_line=batch_slice.first_line)
        for position, line in enumerate(lines, start=batch_slice.start):
            if position == wanted:
                value = line.value if line.raw is None else _parse_line(line.raw)[0]
                return line.location, _inline_custom_id(value)
        return f"request {index} of batch {batch_slice.index + 1}", None

    def explain_api_error(self, batch_slice: BatchSlice, message: str) -> str:
        """``message`` with each ``requests.N`` (an index in the batch body) as file line and custom_id."""
        located: dict[int, str] = {}

        def where(match: re.Match[str]) -> str:
            index = int(match.group(1))
            if index not in located:
                if len(located) >= MAX_REPORTED_PROBLEMS:
                    return match.group(0)
                location, custom_id = self.locate(batch_slice, index)
                located[index] = f"{location} (custom_id {custom_id!r})" if custom_id else location
            field = match.group(2).lstrip(".")
            return f"{located[index]}, {field}" if field else located[index]

        explained = _API_REQUEST_INDEX.sub(where, message)
        if explained == message:
            return message
        return f"{explained} (in {self.source.describe()}; the API said: {message})"

    def _chunks(self, batch_slice: BatchSlice, proof: bytes = b"") -> Iterator[bytes]:
        start, end = batch_slice.start, batch_slice.start + batch_slice.count
        lines = self._resume.pop(start, None) or self.source.iter_lines(
            offset=batch_slice.offset, first_line=batch_slice.first_line
        )
        self._resume.clear()
        checker = RequestChecker(self.source.model)
        digest = hashlib.sha256()
        buffer = bytearray(_BODY_START)
        position = start
        for line in lines:
            if line.raw is not None and not self.reencoded[position]:
                encoded = line.raw  # validated in the first pass; the digest below proves it unchanged
            elif (checked := checker.check(line)) is not None:
                encoded = checked.encoded
            else:
                raise checker.error(self.source)
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
                f"{self.source.describe()} changed after it was validated (batch {batch_slice.index + 1} "
                "differs); nothing was submitted for it. Do not rewrite the input while the task runs."
            )
        if end < self.request_count:
            self._resume[end] = lines  # only a body read to its end hands its reader on
        buffer += proof + _BODY_END
        yield bytes(buffer)


def prepare_job(
    source: RequestSource,
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES,
) -> PreparedJob:
    """Validate every request, fingerprint the job and plan its batches, in one streaming pass.

    Raises :class:`RequestValidationError` naming each bad line (up to 20) before anything is sent.
    Each batch keeps room for its proof request: a request slot within the API's 100,000 (so at most
    99,999 of the job's requests) and :data:`~airflow_provider_batches.proof.PROOF_RESERVED_BYTES`
    within ``max_bytes``.
    """
    if not 1 <= max_requests <= MAX_REQUESTS_PER_BATCH:
        raise RequestValidationError(f"max_requests_per_batch must be 1 to {MAX_REQUESTS_PER_BATCH}")
    if not _ENVELOPE_BYTES + PROOF_RESERVED_BYTES < max_bytes <= MAX_BATCH_BYTES:
        raise RequestValidationError(
            f"max_bytes_per_batch must be at most {MAX_BATCH_BYTES} and over "
            f"{_ENVELOPE_BYTES + PROOF_RESERVED_BYTES} (room for a request and the batch's proof request)"
        )
    max_requests = min(max_requests, MAX_REQUESTS_PER_BATCH - PROOF_RESERVED_REQUESTS)
    max_bytes -= PROOF_RESERVED_BYTES
    checker = RequestChecker(source.model)
    usage: dict[str, ModelUsage] = {}
    planner = _SlicePlanner(max_requests, max_bytes)
    reencoded = bytearray()
    for line in source.iter_lines(max_bytes - _ENVELOPE_BYTES):
        if line.size is not None:
            message = _too_long(max_bytes)
            checker.note(line.location, _custom_id_hint(line.raw), message)
            continue
        checked = checker.check(line)
        if checked is None or checker.problem_count:
            continue  # keep checking the rest, to report every problem at once
        if _ENVELOPE_BYTES + len(checked.encoded) > max_bytes:
            checker.note(
                line.location,
                checked.request["custom_id"],
                f"is {len(checked.encoded):,} bytes, {_over_limit(max_bytes)}",
            )
            continue
        params = checked.request["params"]
        used = usage.get(params["model"])
        if used is None:
            used = usage[params["model"]] = ModelUsage()
        used.add(line, checked.request["custom_id"], params)
        planner.add(checked.encoded, checked.id_hash, line)
        reencoded.append(checked.encoded is not line.raw)
    if checker.suspects:
        _confirm_duplicates(source, checker, max_bytes - _ENVELOPE_BYTES)
    if checker.problem_count:
        raise checker.error(source)
    if planner.total == 0:
        raise RequestValidationError(f"no requests in {source.describe()}: the input is empty")
    slices = planner.finish()
    # The job's fingerprint covers every byte sent and how it is split, hashing the input only once
    # (sha256: with the CPU's SHA extensions it is about twice as fast as blake2b here).
    fingerprint = hashlib.sha256(
        "\n".join(f"{s.start}:{s.count}:{s.size}:{s.sha256}" for s in slices).encode()
    ).hexdigest()
    models = {model: used.requests for model, used in usage.items()}  # counted once, by ModelUsage
    return PreparedJob(
        source, planner.total, fingerprint, slices, models, bytes(reencoded), model_usage=usage
    )


def _too_long(max_bytes: int) -> str:
    """A line refused as it streamed: the file was not read past it. ``max_bytes`` is the batch limit
    less the proof request's reserved bytes."""
    return (
        f"is longer than the {max_bytes - _ENVELOPE_BYTES:,} bytes a request can have in a "
        f"{max_bytes + PROOF_RESERVED_BYTES:,}-byte batch (less {PROOF_RESERVED_BYTES} bytes kept for the "
        "batch's proof request): split or shorten it (the file was not read further)"
    )


def _over_limit(room: int) -> str:
    """``room`` is the batch limit less the proof request's reserved bytes."""
    return (
        f"over the {room + PROOF_RESERVED_BYTES:,}-byte batch limit (less {PROOF_RESERVED_BYTES} bytes kept "
        "for the batch's proof request): split or shorten it"
    )


class _SlicePlanner:
    """Greedy split: a new batch whenever the next request would break the count or byte limit."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.slices: list[BatchSlice] = []
        self.total = 0
        self._start = self._count = 0
        self._offset, self._first_line = 0, 1
        self._size = _ENVELOPE_BYTES
        self._digest = hashlib.sha256()
        self._ids = CustomIdDigest()

    def add(self, encoded: bytes, id_hash: int, line: SourceLine) -> None:
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
        self._count += 1
        self.total += 1

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
            )
        )
        self._start, self._count, self._size = self.total, 0, _ENVELOPE_BYTES
        self._digest = hashlib.sha256()
        self._ids = CustomIdDigest()
