"""AnthropicBatchResultsToObjectStorageOperator: batch results streamed, verified, then published.

Results go from each batch's ``results_url`` to any Airflow object storage (``file://``, ``s3://``,
``gs://``...) in bounded memory. Every line is checked while it streams (valid JSON, a custom_id
seen once, counts per result type equal to the batch's ``request_counts``); files are staged and
only published once complete and verified, and ``_manifest.json`` is written last.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Literal

import msgspec
from airflow.sdk import Asset, BaseOperator, Context, ObjectStoragePath

from airflow_provider_batches._compat import AirflowFailException
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.errors import AnthropicBatchesError, APIConnectionError, BatchNotReadyError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.structured_output import OutputSchema, StructuredOutput
from airflow_provider_batches.transfers._publish import StagedFile, Staging, remove_if_exists, uri_of
from airflow_provider_batches.transfers.outputs import OutputFormat, OutputOptions, ResultOutputs
from airflow_provider_batches.transfers.parquet_writer import DEFAULT_ROW_GROUP_SIZE

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
#: A result type also names a file in split mode, so it must be a plain word.
_RESULT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Bytes asked of the HTTP stream at a time: large enough to keep per-chunk Python work negligible.
#: Bytes per read from the results stream; None takes them as they arrive (no re-chunking copy).
CHUNK_SIZE: int | None = None

Compression = Literal["gzip"]


class ResultsVerificationError(AnthropicBatchesError):
    """Downloaded results do not match their batch (a bad line, a repeated custom_id, wrong counts)."""


class DestinationConflictError(AnthropicBatchesError, AirflowFailException):
    """The destination holds another job's output and overwrite=False. Not retried: a setting must change."""


class _ResultType(msgspec.Struct):
    type: str


class _ResultLine(msgspec.Struct):
    """The two fields verification needs. Decoding still checks that the whole line is valid JSON."""

    custom_id: str
    result: _ResultType


# msgspec (an Airflow dependency) decodes only these fields and skips the rest at C speed: several
# times faster than json.loads, which would build every message of every line (the hot path).
_decode_result_line = msgspec.json.Decoder(_ResultLine).decode
_decode_result_lines = msgspec.json.Decoder(list[_ResultLine]).decode


def parse_result_block(block: bytes) -> list[tuple[str, str]] | None:
    """``(custom_id, type)`` of every line of a block of LF-terminated lines, decoded in one C call.

    None when any line needs the line-by-line path: a CR or blank line to drop, or a line that is
    not a valid result (that path names the line and what is wrong with it).
    """
    if b"\r" in block:  # blank lines need no test: they leave ",," and the decode fails
        return None
    try:
        items = _decode_result_lines(b"[" + block[:-1].replace(b"\n", b",") + b"]")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(items) != block.count(b"\n"):  # a line holding two values: a bad line, not two results
        return None
    parsed = [(item.custom_id, item.result.type) for item in items]
    if not all(custom_id and _RESULT_TYPE_PATTERN.match(kind) for custom_id, kind in parsed):
        return None
    return parsed


def parse_result_line(line: bytes | memoryview) -> tuple[str, str]:
    """``(custom_id, result type)`` of one JSONL line, or ValueError saying what is wrong with it."""
    try:
        parsed = _decode_result_line(line)
    except msgspec.ValidationError as exc:
        raise ValueError(f"is not a result line ({exc})") from None
    except msgspec.DecodeError:
        raise ValueError("is not valid JSON") from None
    if not parsed.custom_id:
        raise ValueError("has an empty custom_id")
    if not _RESULT_TYPE_PATTERN.match(parsed.result.type):
        raise ValueError(f"(custom_id {parsed.custom_id!r}) has an invalid result.type")
    return parsed.custom_id, parsed.result.type


class BatchLedger:
    """What one batch's download delivered: counts per result type and custom_ids, across retries.

    A retried download starts again from the first byte. Lines an interrupted attempt already wrote
    are recognised by custom_id and not written twice, so outputs shared by several batches (split
    mode) never need rewinding. The custom_ids are dropped once the batch is verified, so a job holds
    those of one batch at a time (at most 100,000).
    """

    def __init__(self, batch: MessageBatch) -> None:
        self.batch = batch
        self.counts: dict[str, int] = dict.fromkeys(RESULT_TYPES, 0)
        self.results = 0
        self._written: set[str] = set()
        self._attempt_seen: set[str] = self._written
        self._line_number = 0

    def start_attempt(self) -> None:
        # While nothing is written yet, one set serves both purposes (half the memory).
        self._attempt_seen = set() if self._written else self._written
        self._line_number = 0

    def admit(self, line: bytes | memoryview) -> str | None:
        """The line's result type if it must be written; None if an earlier attempt wrote it."""
        try:
            custom_id, kind = parse_result_line(line)
        except ValueError as exc:
            raise self._error(f"line {self._line_number + 1} {exc}") from None
        return self.admit_parsed(custom_id, kind)

    def admit_parsed(self, custom_id: str, kind: str) -> str | None:
        """:meth:`admit` for a line already parsed."""
        self._line_number += 1
        if custom_id in self._attempt_seen:
            raise self._error(f"custom_id {custom_id!r} appears twice (line {self._line_number})")
        already_written = custom_id in self._written
        self._attempt_seen.add(custom_id)
        if already_written:
            return None
        self._written.add(custom_id)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.results += 1
        return kind

    def admit_block(self, parsed: list[tuple[str, str]]) -> list[str | None]:
        """:meth:`admit_parsed` for a block of lines, with set operations when all of them are new."""
        ids = {custom_id for custom_id, _ in parsed}
        first_attempt = self._attempt_seen is self._written
        if not first_attempt or len(ids) != len(parsed) or not ids.isdisjoint(self._written):
            return [self.admit_parsed(custom_id, kind) for custom_id, kind in parsed]  # names the culprit
        self._written |= ids
        self._line_number += len(parsed)
        self.results += len(parsed)
        for kind, count in Counter(kind for _, kind in parsed).items():
            self.counts[kind] = self.counts.get(kind, 0) + count
        return [kind for _, kind in parsed]

    def finish(self) -> None:
        """Check a complete download against the batch's ``request_counts``."""
        if len(self._attempt_seen) != len(self._written):
            raise self._error(
                f"the results changed between download attempts ({len(self._written)} custom_ids "
                f"written, {len(self._attempt_seen)} in the last download)"
            )
        expected = {kind: count for kind, count in self.batch.request_counts.as_dict().items()}
        expected.pop("processing", None)
        mismatches = [
            f"{kind}: expected {expected.get(kind, 0)}, got {self.counts.get(kind, 0)}"
            for kind in sorted(expected.keys() | self.counts.keys())
            if expected.get(kind, 0) != self.counts.get(kind, 0)
        ]
        if mismatches:
            raise self._error(
                "result counts differ from the batch's request_counts: " + "; ".join(mismatches)
            )
        self._written = self._attempt_seen = set()  # verified: the ids are no longer needed

    def _error(self, detail: str) -> ResultsVerificationError:
        return ResultsVerificationError(f"batch {self.batch.id}: {detail}; nothing was published")


class TransferProgress:
    """Logs bytes, results and throughput every ``interval`` seconds of a long transfer."""

    def __init__(self, log: Any, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval = interval
        self.clock = clock
        self.started = self.last_logged = clock()
        self.bytes = 0
        self.results = 0

    def advance(self, nbytes: int, nresults: int, batch_id: str) -> None:
        self.bytes += nbytes
        self.results += nresults
        now = self.clock()
        if now - self.last_logged >= self.interval:
            self.last_logged = now
            self.log.info("Transferring %s: %s", batch_id, self.summary(now))

    def summary(self, now: float | None = None) -> str:
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        megabytes = self.bytes / 1e6
        return f"{megabytes:,.1f} MB, {self.results:,} results, {megabytes / elapsed:,.1f} MB/s"


class AnthropicBatchResultsToObjectStorageOperator(BaseOperator):
    """Stream the results of one or more ended batches to object storage, verified, never partial.

    Writes ``<batch_id>.jsonl`` per batch, or with ``split_by_result_type`` one file per result type
    (``succeeded.jsonl``, ``errored.jsonl``, ``canceled.jsonl``, ``expired.jsonl``) holding the lines
    of every batch; ``.gz`` appended with ``compression="gzip"``. Then ``_manifest.json`` (batch ids,
    files, counts, bytes, sha256), which is also the XCom value. A prefix whose manifest exists is
    complete.

    :param batch_id: a batch id, a list of ids, or the create operator's manifest (templated).
    :param destination: an object storage URI prefix, e.g. ``s3://bucket/claude/{{ ds }}/`` (templated).
    :param dest_conn_id: the connection of the destination's filesystem (templated).
    :param conn_id: the Anthropic connection.
    :param split_by_result_type: one file per result type instead of one per batch.
    :param compression: ``"gzip"`` or None.
    :param overwrite: rewrite a complete output of the same inputs. When False, such an output is kept
        and its manifest returned, and a manifest of other inputs at the destination fails the task.
    :param download_retries: how many times an interrupted results download starts again.
    :param download_retry_delay: seconds before a retried download, times the attempt number.
    :param progress_interval: seconds between progress log lines.
    :param gzip_level: compression level for ``compression="gzip"`` (1 fastest, 9 smallest).
    :param output_format: ``"jsonl"`` (the lines as received) or ``"parquet"`` (flattened rows, see
        :mod:`airflow_provider_batches.transfers.rows`; needs the ``parquet`` extra).
    :param row_group_size: rows per Parquet row group (bounds the memory of the transfer).
    :param parquet_compression: the codec inside Parquet files (``zstd``, ``snappy``, ``none``...).
    :param output_schema: a Pydantic model class or JSON schema: succeeded answers are validated and
        added as ``parsed``; those that do not validate are listed in ``invalid_output.jsonl``.
    """

    template_fields: Sequence[str] = ("batch_id", "destination", "dest_conn_id")
    ui_color = "#d4a27f"

    def __init__(
        self,
        *,
        batch_id: str | Sequence[str] | dict[str, Any],
        destination: str | ObjectStoragePath,
        dest_conn_id: str | None = None,
        conn_id: str = AnthropicHook.default_conn_name,
        split_by_result_type: bool = False,
        compression: Compression | None = None,
        overwrite: bool = False,
        download_retries: int = 3,
        download_retry_delay: float = 5.0,
        progress_interval: float = 10.0,
        gzip_level: int = 6,
        output_format: OutputFormat = "jsonl",
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        parquet_compression: str = "zstd",
        output_schema: OutputSchema | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_options = OutputOptions(
            output_format=output_format,
            compression=compression,
            row_group_size=row_group_size,
            parquet_compression=parquet_compression,
            structured=None if output_schema is None else StructuredOutput.of(output_schema),
        )
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
        if download_retries < 0:
            raise ValueError("download_retries must not be negative")
        self.batch_id = batch_id
        self.destination = destination
        self.dest_conn_id = dest_conn_id
        self.conn_id = conn_id
        self.split_by_result_type = split_by_result_type
        self.compression = compression
        self.overwrite = overwrite
        self.download_retries = download_retries
        self.download_retry_delay = download_retry_delay
        self.progress_interval = progress_interval
        self.gzip_level = gzip_level

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(conn_id=self.conn_id)

    # -- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        batch_ids = normalize_batch_ids(self.batch_id)
        destination = self._destination_path()
        try:
            manifest = self._existing_manifest(destination, batch_ids)
            if manifest is None:
                batches = self._ended_batches(batch_ids)
                manifest = self._transfer(destination, batches)
        finally:
            self.hook.close()
        self._emit_asset_events(context, manifest)
        return manifest

    def _destination_path(self) -> ObjectStoragePath:
        if isinstance(self.destination, ObjectStoragePath):
            if self.dest_conn_id is None:
                return self.destination
            return ObjectStoragePath(str(self.destination), conn_id=self.dest_conn_id)
        return ObjectStoragePath(self.destination, conn_id=self.dest_conn_id)

    def _ended_batches(self, batch_ids: list[str]) -> list[MessageBatch]:
        """Every batch, or a clear refusal naming each one not ready, before anything is written."""
        batches = [self.hook.get_batch(batch_id) for batch_id in batch_ids]
        problems = []
        for batch in batches:
            if batch.archived_at is not None:
                problems.append(
                    f"batch {batch.id} was archived at {batch.archived_at:%Y-%m-%d %H:%M}Z and its results "
                    "are no longer available"
                )
            elif not batch.is_ended or not batch.results_url:
                problems.append(
                    f"batch {batch.id} is {batch.processing_status}; results exist only once it has ended "
                    "(wait with AnthropicBatchSensor or the create operator's wait_for_completion)"
                )
        if problems:
            raise BatchNotReadyError("; ".join(problems))
        return batches

    # -- re-runs ----------------------------------------------------------------------------------

    def _existing_manifest(
        self, destination: ObjectStoragePath, batch_ids: list[str]
    ) -> dict[str, Any] | None:
        """The manifest of a complete output of these same inputs, when it may be kept (overwrite=False)."""
        if self.overwrite:
            return None
        manifest_path = destination / MANIFEST_NAME
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_bytes())
        except ValueError:
            self.log.warning("%s is not valid JSON; writing the output again", uri_of(manifest_path))
            return None
        same_inputs = (
            isinstance(manifest, dict)
            and manifest.get("batch_ids") == batch_ids
            and manifest.get("split_by_result_type") == self.split_by_result_type
            and manifest.get("compression") == self.compression
            and manifest.get("output_format", "jsonl") == self.output_options.output_format
            and manifest.get("output_schema") == self.output_options.manifest_fields()["output_schema"]
        )
        if not same_inputs:
            raise DestinationConflictError(
                f"{uri_of(destination)} already holds the output of other inputs (see {MANIFEST_NAME}); "
                "overwrite=False keeps it. Choose another destination or set overwrite=True."
            )
        missing = [
            entry.get("name")
            for entry in manifest.get("files", [])
            if not _has_size(destination / str(entry.get("name")), entry.get("bytes"))
        ]
        if missing:
            self.log.warning(
                "Existing output is incomplete (%s); writing it again", ", ".join(map(str, missing))
            )
            return None
        self.log.info("%s already holds these results (%s); skipping", uri_of(destination), MANIFEST_NAME)
        return manifest  # type: ignore[no-any-return]

    # -- transfer ---------------------------------------------------------------------------------

    def _transfer(self, destination: ObjectStoragePath, batches: list[MessageBatch]) -> dict[str, Any]:
        started_at = datetime.now(timezone.utc)
        progress = TransferProgress(self.log, self.progress_interval)
        staging = Staging(destination, gzip_level=self.gzip_level if self.compression == "gzip" else None)
        outputs = ResultOutputs(staging, self.output_options)
        ledgers = [BatchLedger(batch) for batch in batches]
        file_counts: dict[str, dict[str, int]] = {}
        try:
            if self.split_by_result_type:
                self._write_split(outputs, ledgers, progress, file_counts)
            else:
                self._write_per_batch(outputs, ledgers, progress, file_counts)
            file_counts.update(outputs.finish())
            self.log.info("Downloaded and verified %d batch(es): %s", len(batches), progress.summary())
            remove_if_exists(destination / MANIFEST_NAME)  # a prefix with a manifest is always consistent
            for name in file_counts:
                staging.publish(name)
            manifest = self._manifest(destination, batches, ledgers, staging, file_counts, started_at)
            manifest.update(outputs.manifest_fields())
            staging.write_json(MANIFEST_NAME, manifest)
            staging.publish(MANIFEST_NAME)
        except BaseException:
            staging.discard()
            raise
        staging.remove_folder()
        self.log.info(
            "Published %d file(s) and %s to %s", len(file_counts), MANIFEST_NAME, uri_of(destination)
        )
        return manifest

    def _write_per_batch(
        self,
        outputs: ResultOutputs,
        ledgers: list[BatchLedger],
        progress: TransferProgress,
        file_counts: dict[str, dict[str, int]],
    ) -> None:
        for ledger in ledgers:
            outputs.start_batch(ledger.batch.id)
            staged = outputs.open(ledger.batch.id)
            name = staged.name
            self._download(ledger, _always(staged), progress)
            staged.close()
            file_counts[name] = dict(ledger.counts)

    def _write_split(
        self,
        outputs: ResultOutputs,
        ledgers: list[BatchLedger],
        progress: TransferProgress,
        file_counts: dict[str, dict[str, int]],
    ) -> None:
        by_kind: dict[str, StagedFile] = {kind: outputs.open(kind) for kind in RESULT_TYPES}

        def route(kind: str) -> StagedFile:
            if kind not in by_kind:  # a result type newer than this code: it gets its own file
                by_kind[kind] = outputs.open(kind)
            return by_kind[kind]

        for ledger in ledgers:
            outputs.start_batch(ledger.batch.id)
            self._download(ledger, route, progress)
        for kind, staged in by_kind.items():
            staged.close()
            file_counts[staged.name] = {kind: sum(ledger.counts.get(kind, 0) for ledger in ledgers)}

    def _download(
        self, ledger: BatchLedger, route: Callable[[str], StagedFile], progress: TransferProgress
    ) -> None:
        """Stream one batch into its output(s), starting again from the first byte if the stream breaks."""
        batch = ledger.batch
        attempts = self.download_retries + 1
        for attempt in range(1, attempts + 1):
            ledger.start_attempt()
            try:
                self._copy_once(ledger, route, progress)
            except APIConnectionError as exc:
                if attempt == attempts:
                    raise APIConnectionError(
                        f"the results download of batch {batch.id} failed {attempts} time(s); "
                        f"nothing was published. Last error: {exc}"
                    ) from exc
                delay = self.download_retry_delay * attempt
                self.log.warning(
                    "Results stream of %s broke off (%s); downloading again from the start in %.1f s "
                    "(attempt %d of %d)",
                    batch.id,
                    exc,
                    delay,
                    attempt + 1,
                    attempts,
                )
                time.sleep(delay)
                continue
            ledger.finish()
            self.log.info(
                "Batch %s: %d results verified (%s)", batch.id, ledger.results, _counts_text(ledger)
            )
            return

    def _copy_once(
        self, ledger: BatchLedger, route: Callable[[str], StagedFile], progress: TransferProgress
    ) -> None:
        carry = b""  # the incomplete last line of the previous chunk
        for chunk in self.hook.iter_results_bytes(ledger.batch, chunk_size=CHUNK_SIZE):
            last = chunk.rfind(b"\n")
            if last < 0:
                carry += chunk
                continue
            begin = written = 0
            if carry:  # the line that straddles two chunks is the only one copied
                begin = chunk.find(b"\n") + 1
                written = _write_lines(carry + chunk[:begin], ledger, route)
            written += _write_lines(chunk, ledger, route, begin=begin, end=last + 1)
            carry = chunk[last + 1 :]
            progress.advance(len(chunk), written, ledger.batch.id)
        if carry:
            progress.advance(0, _write_lines(carry + b"\n", ledger, route), ledger.batch.id)

    # -- outputs ----------------------------------------------------------------------------------

    def _manifest(
        self,
        destination: ObjectStoragePath,
        batches: list[MessageBatch],
        ledgers: list[BatchLedger],
        staging: Staging,
        file_counts: dict[str, dict[str, int]],
        started_at: datetime,
    ) -> dict[str, Any]:
        totals: dict[str, int] = dict.fromkeys(RESULT_TYPES, 0)
        for ledger in ledgers:
            for kind, count in ledger.counts.items():
                totals[kind] = totals.get(kind, 0) + count
        files = [
            {
                "name": name,
                "uri": uri_of(destination / name),
                "results": sum(counts.values()),
                "counts": counts,
                "bytes": staging.files[name].size,
                "sha256": staging.files[name].sha256,
            }
            for name, counts in file_counts.items()
        ]
        return {
            "manifest_version": MANIFEST_VERSION,
            "destination": uri_of(destination),
            "batch_ids": [batch.id for batch in batches],
            "split_by_result_type": self.split_by_result_type,
            "compression": self.compression,
            "files": files,
            "batches": {ledger.batch.id: dict(ledger.counts) for ledger in ledgers},
            "counts": totals,
            "results": sum(totals.values()),
            "bytes": sum(staging.files[name].size for name in file_counts),
            "started_at": started_at.isoformat(),
            "written_at": datetime.now(timezone.utc).isoformat(),
        }

    def _emit_asset_events(self, context: Context, manifest: dict[str, Any]) -> None:
        """Put the counts in the extra of the asset event of every Asset outlet."""
        outlets = [outlet for outlet in self.outlets if isinstance(outlet, Asset)]
        if not outlets:
            return
        extra = {
            "destination": manifest["destination"],
            "manifest": f"{manifest['destination']}/{MANIFEST_NAME}",
            "batch_ids": manifest["batch_ids"],
            "counts": manifest["counts"],
            "results": manifest["results"],
            "bytes": manifest["bytes"],
        }
        for asset in outlets:
            context["outlet_events"][asset].extra.update(extra)


def _write_lines(
    data: bytes,
    ledger: BatchLedger,
    route: Callable[[str], StagedFile],
    *,
    begin: int = 0,
    end: int | None = None,
) -> int:
    """Verify the lines of ``data[begin:end]`` (which ends with LF) and write the new ones; returns how
    many were new.

    The hot path decodes the whole block in one call and, when every line is new and bound for one
    output, writes the received bytes as they are. Otherwise the kept lines are joined per output,
    normalised (LF, no blank lines).
    """
    end = len(data) if end is None else end
    view = memoryview(data)
    parsed = parse_result_block(data[begin:end])
    if parsed is None:
        return _write_line_by_line(data, ledger, route, begin=begin, end=end)
    kinds = ledger.admit_block(parsed)
    targets = {route(kind) for kind in set(kinds) if kind is not None}
    if len(targets) == 1 and None not in kinds:
        (staged,) = targets
        staged.write(view[begin:end])
        return len(kinds)
    kept: dict[StagedFile, list[memoryview]] = {}
    position = begin
    for kind in kinds:
        newline = data.find(b"\n", position, end)
        if kind is not None:
            kept.setdefault(route(kind), []).append(view[position:newline])
        position = newline + 1
    _write_joined(kept)
    return len(kinds) - kinds.count(None)


def _write_line_by_line(
    data: bytes, ledger: BatchLedger, route: Callable[[str], StagedFile], *, begin: int, end: int
) -> int:
    """The careful path: one line at a time, dropping CRs and blank lines, naming a bad line."""
    view = memoryview(data)
    kept: dict[StagedFile, list[memoryview]] = {}
    written = 0
    position = begin
    while position < end:
        newline = data.find(b"\n", position, end)
        line_end = newline
        if line_end > position and data[line_end - 1] == 13:  # CRLF
            line_end -= 1
        if line_end > position and data[position:line_end].strip():
            kind = ledger.admit(view[position:line_end])
            if kind is not None:
                kept.setdefault(route(kind), []).append(view[position:line_end])
                written += 1
        position = newline + 1
    _write_joined(kept)
    return written


def _write_joined(kept: dict[StagedFile, list[memoryview]]) -> None:
    for staged, lines in kept.items():
        lines.append(memoryview(b""))
        staged.write(b"\n".join(lines))


def _always(staged: StagedFile) -> Callable[[str], StagedFile]:
    """The route of per-batch mode: every result type goes to the batch's one file."""
    return lambda _kind: staged


def _has_size(path: ObjectStoragePath, size: Any) -> bool:
    try:
        return isinstance(size, int) and path.size() == size
    except FileNotFoundError:
        return False


def _counts_text(ledger: BatchLedger) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in ledger.counts.items())
