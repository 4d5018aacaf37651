"""Result lines too long to hold in memory: checked as they stream, spooled to disk, then copied.

A line longer than :data:`BIG_LINE_BYTES` leaves the hot path of :mod:`.writer`. Its bytes go to a
temporary file while :class:`~.json_scan.JsonScanner` checks that they form one JSON object and
keeps its custom_id, result type, model and usage; once the line ends it is admitted like any other
(``BatchLedger``), metered, and copied to its output in 1 MiB pieces. Memory stays constant whatever
the line's size. Outputs that read each line whole (Parquet, ``output_schema``) take such a line
only up to :data:`MAX_WHOLE_LINE_BYTES`.
"""

from __future__ import annotations

import tempfile
from typing import Any

from airflow_provider_batches.result_lines import LINE_PATHS, line_from_paths
from airflow_provider_batches.transfers.json_scan import TOO_LONG, JsonScanError, JsonScanner
from airflow_provider_batches.transfers.verification import BatchLedger, checked_fields

BIG_LINE_BYTES = 4 * 1024 * 1024
"""Longer lines are streamed through a spool file instead of held."""
MAX_WHOLE_LINE_BYTES = 64 * 1024 * 1024
"""The longest line an output that reads whole lines (Parquet, ``output_schema``) takes."""
COPY_BYTES = 1 << 20


class BigLine:
    """One result line too long to hold: :meth:`feed` its pieces, then :meth:`finish` it."""

    def __init__(self, ledger: BatchLedger, route: Any, meter: Any = None) -> None:
        self.ledger = ledger
        self.route = route
        self.meter = meter
        self.scanner = JsonScanner(LINE_PATHS)
        # Closed by finish(); a download broken mid-line leaves it to the garbage collector (the file
        # has no name on disk, so nothing is left behind either way).
        self.spool = tempfile.TemporaryFile(prefix="anthropic-result-line-")  # noqa: SIM115
        self.size = 0
        self._last = b""

    def feed(self, data: bytes | memoryview) -> None:
        try:
            self.scanner.feed(data)
        except JsonScanError as exc:
            self.spool.close()
            raise self.ledger.line_error(str(exc)) from None
        self.spool.write(data)
        self.size += len(data)
        if len(data):
            self._last = bytes(data[-1:])

    def finish(self) -> int:
        """Admit, meter and copy the complete line; how many lines were written (0 or 1)."""
        with self.spool:
            try:
                kept = self.scanner.end()
            except JsonScanError as exc:
                raise self.ledger.line_error(str(exc)) from None
            custom_id = kept.get(("custom_id",))
            if custom_id is TOO_LONG:
                raise self.ledger.line_error("has a custom_id longer than any request can have")
            try:
                custom_id, kind = checked_fields(custom_id, kept.get(("result", "type")))
            except ValueError as exc:
                raise self.ledger.line_error(str(exc)) from None
            if self.meter is not None:
                self.meter.add_lines([line_from_paths(kept)])
            admitted = self.ledger.admit_parsed(custom_id, kind)
            if admitted is None:
                return 0
            self._copy(self.route(admitted), custom_id)
            return 1

    def _copy(self, target: Any, custom_id: str) -> None:
        size = self.size - (self._last == b"\r")  # CRLF: written with LF, as the hot path does
        if target.whole_lines and size > MAX_WHOLE_LINE_BYTES:
            raise self.ledger.line_error(
                f"(custom_id {custom_id!r}) is {size:,} bytes: Parquet output and output_schema read "
                f"every line whole, up to {MAX_WHOLE_LINE_BYTES:,} bytes. Export this batch as JSONL "
                "without output_schema (any line size streams)"
            )
        self.spool.seek(0)
        if target.whole_lines:
            target.write(self.spool.read(size) + b"\n")
            return
        left = size
        while left > 0:
            piece = self.spool.read(min(COPY_BYTES, left))
            target.write(piece)
            left -= len(piece)
        target.write(b"\n")
