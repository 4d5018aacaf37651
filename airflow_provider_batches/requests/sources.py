"""Where a job's requests come from: an inline list or a JSONL file at an ObjectStoragePath URI,
read through the one bounded reader; a source's subset (a follow-up round's requests)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import IO, Any

import msgspec

from airflow_provider_batches.errors import RequestValidationError
from airflow_provider_batches.requests.limits import MAX_LINE_BYTES
from airflow_provider_batches.requests.reading import (
    BoundedGzip,
    ExpansionBoundError,
    Readable,
    SourceLine,
    SourceSpan,
    Window,
    read_lines,
)
from airflow_provider_batches.requests.validation import RequestChecker, confirm_duplicates


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

    #: A rewrite of every valid request's params (an output schema), applied by :meth:`checker`.
    params_rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None

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
        with self._open() as stream:
            if offset:
                self._seek(stream, offset, first_line)
            yield from self._file_lines(stream, max_line_bytes, offset, first_line)

    def iter_spans(
        self, spans: Sequence[SourceSpan], max_line_bytes: int = MAX_LINE_BYTES
    ) -> Iterator[tuple[SourceSpan, int, SourceLine]]:
        """The requests of each span (in order of ``offset``), with their ordinals: each span read
        alone, nothing between or after them (a ``.gz`` is decompressed once, up to the last)."""
        if self.requests is not None:
            for span in spans:
                end = len(self.requests) if span.end is None else min(span.end, len(self.requests))
                for index in range(span.offset, end):
                    yield (
                        span,
                        span.start + index - span.offset,
                        SourceLine(index, index, value=self.requests[index]),
                    )
            return
        with self._open() as stream:
            for span in spans:
                self._seek(stream, span.offset, span.first_line)
                window = stream if span.end is None else Window(stream, span.end - span.offset)
                lines = self._file_lines(window, max_line_bytes, span.offset, span.first_line)
                for ordinal, line in enumerate(lines, start=span.start):
                    yield span, ordinal, line

    def _seek(self, stream: IO[bytes], offset: int, first_line: int) -> None:
        try:
            stream.seek(offset)
        except ExpansionBoundError as exc:
            raise RequestValidationError(
                f"requests_path {self.requests_path!r} refused before line {first_line}: {exc}"
            ) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise RequestValidationError(
                f"requests_path {self.requests_path!r} cannot be read before line {first_line}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _file_lines(
        self, stream: Readable, max_line_bytes: int, offset: int, first_line: int
    ) -> Iterator[SourceLine]:
        number = first_line - 1
        try:
            for raw, size, start, lines in read_lines(stream, max_line_bytes, offset):
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

    def in_spans(
        self,
        spans: Sequence[SourceSpan],
        ordinals: bytes | bytearray,
        count: int,
        *,
        label: str = "re-driven",
    ) -> RequestSource:
        """Only the requests of ``spans`` whose ordinal is flagged in ``ordinals`` (one byte per
        ordinal, non-zero: wanted), ``count`` of them: a follow-up round's requests, located without
        reading any other part of the source nor decoding any line."""
        return _SpanSubset(self, spans, ordinals, count, label)

    def checker(self) -> RequestChecker:
        """The one validator of this source's requests (a wrapping source rewrites their params in it)."""
        return RequestChecker(self.model, rewrite=self.params_rewrite)

    def iter_requests(self) -> Iterator[dict[str, Any]]:
        """Validated requests with the default model filled in, streamed; raises at the first bad one."""
        checker = self.checker()
        for line in self.iter_lines():
            checked = checker.check(line)
            if checked is not None and checker.suspects:
                confirm_duplicates(self, checker, MAX_LINE_BYTES, upto=line.number)
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


class _PartOf(RequestSource):
    """Some of a source's requests: read from it, checked and described as its own."""

    def __init__(self, base: RequestSource, count: int, label: str) -> None:
        self.requests = base.requests
        self.requests_path = base.requests_path
        self.requests_conn_id = base.requests_conn_id
        self.model = base.model
        self.params_rewrite = base.params_rewrite
        self._base = base
        self._count = count
        self._label = label

    def describe(self) -> str:
        return f"{self._count} {self._label} requests of {self._base.describe()}"


class _SubsetSource(_PartOf):
    """A source's requests filtered by custom_id (see :meth:`RequestSource.subset`)."""

    def __init__(self, base: RequestSource, custom_ids: Collection[str], label: str) -> None:
        super().__init__(base, len(custom_ids), label)
        self._ids = custom_ids

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


class _SpanSubset(_PartOf):
    """The flagged requests of some spans of a source (see :meth:`RequestSource.in_spans`)."""

    def __init__(
        self,
        base: RequestSource,
        spans: Sequence[SourceSpan],
        ordinals: bytes | bytearray,
        count: int,
        label: str,
    ) -> None:
        super().__init__(base, count, label)
        self._spans = sorted(spans, key=lambda span: span.offset)
        self._ordinals = ordinals

    def iter_lines(
        self, max_line_bytes: int = MAX_LINE_BYTES, *, offset: int = 0, first_line: int = 1
    ) -> Iterator[SourceLine]:
        spans = [span for span in self._spans if span.end is None or span.end > offset]
        wanted = self._ordinals
        for _, ordinal, line in self._base.iter_spans(spans, max_line_bytes):
            if line.offset >= offset and ordinal < len(wanted) and wanted[ordinal]:
                yield line
