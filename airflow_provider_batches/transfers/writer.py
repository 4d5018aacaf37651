"""The hot path of the results transfer: a byte stream cut into blocks of lines, verified, staged.

Chunks are gathered into blocks of whole lines (:data:`~airflow_provider_batches.result_lines.BLOCK_BYTES`,
about 400 results); a block is decoded in one call and, when all its lines are new and bound for one
output, written as received, in one write. Only the odd block (a CR, a blank line, a bad line, a
retried attempt's repeats, the proof request) goes line by line. Compression, hashing and storage
are :mod:`._publish`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from airflow_provider_batches.result_lines import (
    BLOCK_BYTES,
    BlockSplitter,
    decode_block,
    decode_line,
    split_lines,
)
from airflow_provider_batches.spend import UsageMeter
from airflow_provider_batches.transfers._publish import StagedFile
from airflow_provider_batches.transfers.big_lines import BIG_LINE_BYTES, BigLine
from airflow_provider_batches.transfers.verification import BatchLedger, checked_block

Route = Callable[[str], StagedFile]


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


def copy_results(
    chunks: Iterable[bytes],
    ledger: BatchLedger,
    route: Route,
    progress: TransferProgress,
    meter: UsageMeter | None = None,
) -> None:
    """Verify and write one download attempt's lines, whatever the chunk borders; ``meter`` adds up
    the usage of every line of the attempt, from the same decode."""
    batch_id = ledger.batch.id
    splitter = BlockSplitter(BLOCK_BYTES)
    big: BigLine | None = None  # a line too long to hold, streaming through a spool file
    for chunk in chunks:
        if big is not None:
            end = chunk.find(b"\n")
            big.feed(chunk if end < 0 else memoryview(chunk)[:end])
            if end < 0:
                progress.advance(len(chunk), 0, batch_id)
                continue
            progress.advance(end + 1, big.finish(), batch_id)
            big, chunk = None, chunk[end + 1 :]
        block = splitter.feed(chunk)
        if block is not None:
            progress.advance(len(block), write_lines(block, ledger, route, meter), batch_id)
        if splitter.pending_bytes > BIG_LINE_BYTES:  # more than a block held: none of it ends a line
            partial = splitter.take_partial()
            big = BigLine(ledger, route, meter)
            big.feed(partial)
            progress.advance(len(partial), 0, batch_id)
    if big is not None:
        progress.advance(0, big.finish(), batch_id)
    rest = splitter.flush()
    if rest is not None:
        progress.advance(len(rest), write_lines(rest, ledger, route, meter), batch_id)


def write_lines(block: bytes, ledger: BatchLedger, route: Route, meter: UsageMeter | None = None) -> int:
    """Verify the lines of ``block`` (whole lines, the last ending with LF) and write the new ones;
    returns how many were new.

    The hot path decodes the whole block in one call and, when every line is new and bound for one
    output, writes the received bytes as they are: one write per block. Otherwise the kept lines are
    joined per output, normalised (LF, no blank lines).
    """
    lines = decode_block(block)
    checked = None if lines is None else checked_block(lines)
    if checked is None:
        return _write_line_by_line(block, ledger, route, meter)
    assert lines is not None
    if meter is not None:
        meter.add_lines(lines, holds_proof=checked.holds_proof)
    kinds = ledger.admit_block(checked)
    targets = {route(kind) for kind in set(kinds) if kind is not None}
    if len(targets) == 1 and None not in kinds:
        targets.pop().write(block)
        return len(kinds)
    view = memoryview(block)
    kept: dict[StagedFile, list[bytes | memoryview]] = {}
    position = 0
    find = block.find
    for kind in kinds:
        newline = find(b"\n", position)
        if kind is not None:
            kept.setdefault(route(kind), []).append(view[position:newline])
        position = newline + 1
    _write_joined(kept)
    return len(kinds) - kinds.count(None)


def _write_line_by_line(block: bytes, ledger: BatchLedger, route: Route, meter: UsageMeter | None) -> int:
    """The careful path: one line at a time, dropping CRs and blank lines, naming a bad line."""
    kept: dict[StagedFile, list[bytes | memoryview]] = {}
    written = 0
    for raw in split_lines(block):
        try:
            line = decode_line(raw)
        except ValueError as exc:
            raise ledger.line_error(str(exc)) from None
        if meter is not None:
            meter.add_lines([line])
        kind = ledger.admit_line(line)
        if kind is not None:
            kept.setdefault(route(kind), []).append(raw)
            written += 1
    _write_joined(kept)
    return written


def _write_joined(kept: dict[StagedFile, list[bytes | memoryview]]) -> None:
    for staged, lines in kept.items():
        lines.append(b"")
        staged.write(b"\n".join(lines))
