"""A validated job: one pass over the source checks every line, fingerprints the job and plans its
batches; each batch's create body is then streamed (:mod:`.encoding`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_batches.bodies import BatchBody
from airflow_provider_batches.errors import InputChangedError, RequestValidationError
from airflow_provider_batches.proof import PROOF_RESERVED_BYTES, PROOF_RESERVED_REQUESTS, proof_request
from airflow_provider_batches.requests.encoding import EncodedSpool, stream_body
from airflow_provider_batches.requests.limits import (
    ENVELOPE_BYTES,
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    over_limit,
    too_long,
)
from airflow_provider_batches.requests.reading import SourceLine, SourceSpan
from airflow_provider_batches.requests.slicing import BatchSlice, SlicePlanner
from airflow_provider_batches.requests.sources import RequestSource
from airflow_provider_batches.requests.validation import (
    MAX_REPORTED_PROBLEMS,
    Checked,
    confirm_duplicates,
    custom_id_hint,
    inline_custom_id,
    parse_line,
)

_NOTHING_READ = hashlib.sha256().hexdigest()
_API_REQUEST_INDEX = re.compile(r"\brequests\.(\d+)((?:\.[A-Za-z0-9_]+)*)")


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
    #: The requests encoded by the validation pass (``reencoded``), and where each batch's first one
    #: is in it: bodies read them back, never decoding nor checking a line again.
    spool: EncodedSpool | None = field(default=None, compare=False, repr=False)
    spool_starts: tuple[int, ...] = field(default=(), compare=False, repr=False)
    #: Per batch, the digest of the file lines of its spooled requests as read: the body checks them.
    source_digests: tuple[str, ...] = field(default=(), compare=False, repr=False)
    #: The line reader a finished body left off at, by the position it will read next: the next
    #: batch continues it (a ``.gz`` is not decompressed again from the top for each batch).
    _resume: dict[int, Iterator[SourceLine | None]] = field(default_factory=dict, compare=False, repr=False)

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
                value = line.value if line.raw is None else parse_line(line.raw)[0]
                return line.location, inline_custom_id(value)
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
        spooled = self.spool.lines(self.spool_starts[batch_slice.index]) if self.spool else iter(())
        return stream_body(
            self.source,
            batch_slice,
            self.reencoded,
            spooled,
            self._resume,
            self.request_count,
            self.source_digests[batch_slice.index] if self.source_digests else _NOTHING_READ,
            proof,
        )


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
    builder = _JobBuilder(source, max_requests, max_bytes)
    for line in source.iter_lines(builder.max_line_bytes):
        if (checked := builder.check(line)) is not None:
            builder.add(line, checked)
    return builder.finish(source, source)


def prepare_subset(
    source: RequestSource,
    spans: Sequence[SourceSpan],
    custom_ids: Collection[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES,
    label: str = "re-driven",
) -> PreparedJob:
    """The job of the requests of ``source`` whose custom_id is in ``custom_ids``, all within
    ``spans`` (where the first round's batches that hold them lie): only those spans are read, each
    line checked once, and each span's requests must still be the ones its batch sent (count and
    digest), else :class:`InputChangedError` before anything is sent.

    The job's batches are those :func:`prepare_job` makes of the same requests; each notes the spans
    it was read from (``origins``), so that the next round reads only those.
    """
    spans = sorted(spans, key=lambda span: span.offset)
    builder = _JobBuilder(source, max_requests, max_bytes)
    wanted = bytearray(max((span.start + span.count for span in spans), default=0))
    changed: list[SourceSpan] = []
    current: SourceSpan | None = None
    digest, count = hashlib.sha256(), 0
    seen: set[int] = set()

    def close(span: SourceSpan | None) -> None:
        if span is not None and (count != span.count or digest.hexdigest() != span.sha256):
            changed.append(span)

    for span, ordinal, line in source.iter_spans(spans, builder.max_line_bytes):
        if span is not current:
            close(current)
            current, digest, count = span, hashlib.sha256(), 0
            seen.add(span.index)
        count += 1
        if (checked := builder.check(line)) is None:
            continue
        digest.update(checked.encoded)
        if checked.request["custom_id"] in custom_ids and ordinal < len(wanted):
            wanted[ordinal] = 1
            builder.add(line, checked, span.index)
    close(current)
    changed += [span for span in spans if span.index not in seen and span.count]  # no line left at all
    if changed:
        changed.sort(key=lambda span: span.index)
        first = changed[0]
        raise InputChangedError(
            f"{source.describe()} changed since the job was split: the requests of its batch "
            f"{first.index + 1} (from line {first.first_line}) are not the ones that batch sent"
            + (f", nor are those of {len(changed) - 1} more batch(es)" if len(changed) > 1 else "")
        )
    every = source.in_spans(spans, b"\x01" * len(wanted), len(wanted), label="checked")
    subset = source.in_spans(spans, wanted, builder.planner.total, label=label)
    return builder.finish(every, subset)


class _JobBuilder:
    """One validation pass: each line checked once, its encoding spooled when the body cannot take the
    line as it is, the job's model use noted and its batches planned."""

    def __init__(self, source: RequestSource, max_requests: int, max_bytes: int) -> None:
        if not 1 <= max_requests <= MAX_REQUESTS_PER_BATCH:
            raise RequestValidationError(f"max_requests_per_batch must be 1 to {MAX_REQUESTS_PER_BATCH}")
        if not ENVELOPE_BYTES + PROOF_RESERVED_BYTES < max_bytes <= MAX_BATCH_BYTES:
            raise RequestValidationError(
                f"max_bytes_per_batch must be at most {MAX_BATCH_BYTES} and over "
                f"{ENVELOPE_BYTES + PROOF_RESERVED_BYTES} (room for a request and the batch's proof request)"
            )
        self.max_bytes = max_bytes - PROOF_RESERVED_BYTES
        self.max_line_bytes = self.max_bytes - ENVELOPE_BYTES
        self.checker = source.checker()
        self.usage: dict[str, ModelUsage] = {}
        self.planner = SlicePlanner(
            min(max_requests, MAX_REQUESTS_PER_BATCH - PROOF_RESERVED_REQUESTS), self.max_bytes
        )
        self.reencoded = bytearray()
        self.spool = EncodedSpool()
        self.spool_starts: list[int] = []
        self.source_digests: list[str] = []
        self._read = hashlib.sha256()

    def check(self, line: SourceLine) -> Checked | None:
        """The checked request, or None: its problems noted (and, after any problem, every later
        line is only checked, to report every problem at once)."""
        checker = self.checker
        if line.size is not None:
            checker.note(line.location, custom_id_hint(line.raw), too_long(self.max_bytes))
            return None
        checked = checker.check(line)
        if checked is None or checker.problem_count:
            return None
        if ENVELOPE_BYTES + len(checked.encoded) > self.max_bytes:
            checker.note(
                line.location,
                checked.request["custom_id"],
                f"is {len(checked.encoded):,} bytes, {over_limit(self.max_bytes)}",
            )
            return None
        return checked

    def add(self, line: SourceLine, checked: Checked, origin: int | None = None) -> None:
        params = checked.request["params"]
        used = self.usage.get(params["model"])
        if used is None:
            used = self.usage[params["model"]] = ModelUsage()
        used.add(line, checked.request["custom_id"], params)
        if self.planner.add(checked.encoded, checked.id_hash, line, origin):
            if self.spool_starts:
                self.source_digests.append(self._read.hexdigest())
                self._read = hashlib.sha256()
            self.spool_starts.append(self.spool.size)
        if checked.encoded is line.raw:
            self.reencoded.append(0)
        else:
            self.reencoded.append(1)
            self.spool.write(checked.encoded)
            if line.raw is not None:
                self._read.update(line.raw)

    def finish(self, read: RequestSource, job_source: RequestSource) -> PreparedJob:
        """The job of the lines added (``job_source`` reads them again), ``read`` every line checked."""
        checker = self.checker
        if checker.suspects:
            confirm_duplicates(read, checker, self.max_line_bytes)
        if checker.problem_count:
            raise checker.error(read)
        if self.planner.total == 0:
            raise RequestValidationError(f"no requests in {job_source.describe()}: the input is empty")
        slices = self.planner.finish()
        self.spool.finish()
        self.source_digests.append(self._read.hexdigest())
        # The job's fingerprint covers every byte sent and how it is split, hashing the input only once
        # (sha256: with the CPU's SHA extensions it is about twice as fast as blake2b here).
        fingerprint = hashlib.sha256(
            "\n".join(f"{s.start}:{s.count}:{s.size}:{s.sha256}" for s in slices).encode()
        ).hexdigest()
        models = {model: used.requests for model, used in self.usage.items()}  # counted once, by ModelUsage
        return PreparedJob(
            job_source,
            self.planner.total,
            fingerprint,
            slices,
            models,
            bytes(self.reencoded),
            model_usage=self.usage,
            spool=self.spool if self.spool.size else None,
            spool_starts=tuple(self.spool_starts),
            source_digests=tuple(self.source_digests),
        )
