"""Batch requests: where they come from, how they are checked, encoded and split into batches.

Requests are streamed, never loaded whole: an inline list for small jobs, or a JSONL file at any
``ObjectStoragePath`` (``file://``, ``s3://``, ``gs://``... optionally ``.gz``) for big ones. One
pass validates every line, fingerprints the job and plans how to split it into batches that fit
the API's limits; each batch's body is then streamed from the source again, chunk by chunk.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from airflow_provider_batches.bodies import BatchBody
from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.identity import CustomIdDigest

MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BYTES = 256_000_000
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REPORTED_PROBLEMS = 20
BODY_CHUNK_BYTES = 1 << 20

_BODY_START = b'{"requests":['
_BODY_END = b"]}"
_ENVELOPE_BYTES = len(_BODY_START) + len(_BODY_END)


@dataclass(frozen=True)
class SourceLine:
    """One request as read: where it was (for messages), its raw bytes or object."""

    location: str
    raw: bytes | None = None
    value: Any = None


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

    def iter_lines(self) -> Iterator[SourceLine]:
        """Every non-blank request, in order, without parsing file lines."""
        if self.requests is not None:
            for index, value in enumerate(self.requests):
                yield SourceLine(f"requests[{index}]", value=value)
            return
        number = 0
        with self._open() as stream:
            try:
                for number, raw in enumerate(stream, start=1):
                    if raw.strip():
                        yield SourceLine(f"line {number}", raw=raw.strip())
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
            if checked is None:
                raise checker.error(self)
            yield checked.request

    def _open(self) -> IO[bytes]:
        from airflow.sdk import ObjectStoragePath

        uri = self.requests_path or ""
        if "://" not in uri:
            uri = f"file://{uri}"
        try:
            path = ObjectStoragePath(uri, conn_id=self.requests_conn_id)
            stream: IO[bytes] = path.open("rb")
        except Exception as exc:
            raise RequestValidationError(
                f"requests_path {self.requests_path!r} cannot be read: {type(exc).__name__}: {exc}"
            ) from exc
        if uri.endswith(".gz"):
            return gzip.open(stream, "rb")  # type: ignore[return-value]
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

    def iter_lines(self) -> Iterator[SourceLine]:
        for line in self._base.iter_lines():
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


@dataclass(frozen=True)
class Checked:
    """A valid request; ``encoded`` is what goes into the body (a file's own bytes when unchanged)."""

    request: dict[str, Any]
    encoded: bytes


@dataclass
class RequestChecker:
    """Checks requests one at a time, remembering custom_ids to catch duplicates across the job."""

    default_model: str | None
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    _seen: dict[bytes, str] = field(default_factory=dict)

    def check(self, line: SourceLine) -> Checked | None:
        """The request, with the default model filled in; None (and a problem noted) when it is bad."""
        value = line.value
        if line.raw is not None:
            try:
                value = _decode_json(line.raw)
            except json.JSONDecodeError as exc:
                self.note(line.location, None, f"is not valid JSON ({exc.msg} at column {exc.colno})")
                return None
            except ValueError as exc:  # not UTF-8, or a NaN/Infinity literal the API would refuse
                self.note(line.location, None, f"is not valid JSON ({exc})")
                return None
        if not isinstance(value, Mapping):
            self.note(line.location, None, f"must be a JSON object, got {type(value).__name__}")
            return None
        custom_id = value.get("custom_id")
        shown_id = custom_id if isinstance(custom_id, str) else None
        problem = _envelope_problem(value) or _params_problem(value.get("params"), self.default_model)
        if problem:
            self.note(line.location, shown_id, problem)
            return None
        assert isinstance(custom_id, str)
        digest = hashlib.blake2b(custom_id.encode(), digest_size=12).digest()
        if (first := self._seen.get(digest)) is not None:
            self.note(line.location, shown_id, f"custom_id duplicates the one at {first}")
            return None
        self._seen[digest] = line.location
        params = dict(value["params"])
        if "model" in params and line.raw is not None:
            return Checked({"custom_id": custom_id, "params": params}, line.raw)
        params.setdefault("model", self.default_model)
        request = {"custom_id": custom_id, "params": params}
        return Checked(request, json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode())

    def note(self, location: str, custom_id: str | None, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            where = f"{location} (custom_id {custom_id!r})" if custom_id else location
            self.problems.append(f"{where}: {message}")

    def error(self, source: RequestSource) -> RequestValidationError:
        more = self.problem_count - len(self.problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return RequestValidationError(
            f"{self.problem_count} invalid request(s) in {source.describe()}; "
            f"nothing was sent:\n{listing}{tail}"
        )


_fast_decode = msgspec.json.Decoder().decode


def _decode_json(raw: bytes) -> Any:
    """``json.loads(raw)``, several times faster for the lines msgspec (an Airflow dependency) accepts.

    msgspec is stricter than the json module (no NaN/Infinity literals, no integers beyond 64 bits, no
    UTF-16 input, no BOM), never laxer: whatever it refuses goes to ``json.loads``, which refuses
    NaN/Infinity too (they are not JSON, and the API would refuse the whole batch body).
    """
    try:
        return _fast_decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: the API would refuse the whole batch body for one such line."""
    raise ValueError(f"{name} is not a JSON number")


def _envelope_problem(value: Mapping[str, Any]) -> str | None:
    extra = sorted(set(value) - {"custom_id", "params"})
    if extra:
        return f"unknown key(s) {', '.join(map(repr, extra))}: a request has only 'custom_id' and 'params'"
    custom_id = value.get("custom_id")
    if custom_id is None:
        return "custom_id is missing"
    if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.match(custom_id):
        return (
            f"custom_id {custom_id!r} is invalid: use 1 to 64 letters, digits, '_' or '-' "
            "(pattern ^[a-zA-Z0-9_-]{1,64}$)"
        )
    if "params" not in value:
        return "params is missing"
    return None


def _params_problem(params: Any, default_model: str | None) -> str | None:
    if not isinstance(params, Mapping):
        return f"params must be an object, got {type(params).__name__}"
    model = params.get("model", default_model)
    if model is None:
        return "params.model is missing: set it in the request or pass model= to the operator"
    if not isinstance(model, str) or not model:
        return f"params.model must be a model name, got {model!r}"
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return "params.max_tokens is missing: set the most output tokens the answer may use (>= 1)"
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return f"params.max_tokens must be an integer >= 1, got {max_tokens!r}"
    if params.get("stream"):
        return "params.stream: true is not allowed in a batch; remove it"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return "params.messages must be a non-empty list of {'role', 'content'} objects"
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            return f"params.messages.{index}.role must be 'user' or 'assistant'"
        if not isinstance(message.get("content"), (str, list)):
            return f"params.messages.{index}.content must be a string or a list of content blocks"
    return None


# -- jobs: one validation pass, then batches streamed from the source -----------------------------


@dataclass(frozen=True)
class BatchSlice:
    """One batch of a job: requests ``start`` to ``start + count`` of the source.

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

    def body(self, batch_slice: BatchSlice) -> BatchBody:
        """The create body of one batch, streamed from the source again on every attempt."""
        return BatchBody(lambda: self._chunks(batch_slice), batch_slice.count)

    def _chunks(self, batch_slice: BatchSlice) -> Iterator[bytes]:
        end = batch_slice.start + batch_slice.count
        checker = RequestChecker(self.source.model)
        digest = hashlib.sha256()
        buffer = bytearray(_BODY_START)
        for position, line in enumerate(self.source.iter_lines()):
            if position < batch_slice.start:
                continue
            if position >= end:
                break
            if line.raw is not None and not self.reencoded[position]:
                encoded = line.raw  # validated in the first pass; the digest below proves it unchanged
            elif (checked := checker.check(line)) is not None:
                encoded = checked.encoded
            else:
                raise checker.error(self.source)
            digest.update(encoded)
            if position > batch_slice.start:
                buffer += b","
            buffer += encoded
            if len(buffer) >= BODY_CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
        if digest.hexdigest() != batch_slice.sha256:
            # Raising before the closing bytes aborts the upload: the API never sees a whole body.
            raise RequestValidationError(
                f"{self.source.describe()} changed after it was validated (batch {batch_slice.index + 1} "
                "differs); nothing was submitted for it. Do not rewrite the input while the task runs."
            )
        buffer += _BODY_END
        yield bytes(buffer)


def prepare_job(
    source: RequestSource,
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES,
) -> PreparedJob:
    """Validate every request, fingerprint the job and plan its batches, in one streaming pass.

    Raises :class:`RequestValidationError` naming each bad line (up to 20) before anything is sent.
    """
    if not 1 <= max_requests <= MAX_REQUESTS_PER_BATCH:
        raise RequestValidationError(f"max_requests_per_batch must be 1 to {MAX_REQUESTS_PER_BATCH}")
    if not _ENVELOPE_BYTES < max_bytes <= MAX_BATCH_BYTES:
        raise RequestValidationError(f"max_bytes_per_batch must be at most {MAX_BATCH_BYTES}")
    checker = RequestChecker(source.model)
    models: Counter[str] = Counter()
    planner = _SlicePlanner(max_requests, max_bytes)
    reencoded = bytearray()
    for line in source.iter_lines():
        checked = checker.check(line)
        if checked is None or checker.problem_count:
            continue  # keep checking the rest, to report every problem at once
        if _ENVELOPE_BYTES + len(checked.encoded) > max_bytes:
            checker.note(
                line.location,
                checked.request["custom_id"],
                f"is {len(checked.encoded):,} bytes, over the {max_bytes:,}-byte batch limit",
            )
            continue
        models[checked.request["params"]["model"]] += 1
        planner.add(checked.encoded, checked.request["custom_id"])
        reencoded.append(checked.encoded is not line.raw)
    if checker.problem_count:
        raise checker.error(source)
    if planner.total == 0:
        raise RequestValidationError(f"no requests in {source.describe()}: the input is empty")
    slices = planner.finish()
    # The job's fingerprint covers every byte sent and how it is split, hashing the input only once.
    fingerprint = hashlib.sha256(
        "\n".join(f"{s.start}:{s.count}:{s.size}:{s.sha256}" for s in slices).encode()
    ).hexdigest()
    return PreparedJob(source, planner.total, fingerprint, slices, dict(models), bytes(reencoded))


class _SlicePlanner:
    """Greedy split: a new batch whenever the next request would break the count or byte limit."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.slices: list[BatchSlice] = []
        self.total = 0
        self._start = self._count = 0
        self._size = _ENVELOPE_BYTES
        self._digest = hashlib.sha256()
        self._ids = CustomIdDigest()

    def add(self, encoded: bytes, custom_id: str) -> None:
        separator = 1 if self._count else 0
        if self._count and (
            self._count >= self.max_requests or self._size + separator + len(encoded) > self.max_bytes
        ):
            self._close()
            separator = 0
        self._size += separator + len(encoded)
        self._digest.update(encoded)
        self._ids.add(custom_id)
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
                index, self._start, self._count, self._size, self._digest.hexdigest(), self._ids.hexdigest()
            )
        )
        self._start, self._count, self._size = self.total, 0, _ENVELOPE_BYTES
        self._digest = hashlib.sha256()
        self._ids = CustomIdDigest()
