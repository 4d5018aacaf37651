"""The hot path of the results transfer: a byte stream cut into lines, verified, written to staging.

Whole blocks of lines are decoded in one call and, when all are new and bound for one output,
written as received; only the odd block (a CR, a blank line, a retried attempt's repeats) goes
line by line. Compression, hashing and storage are :mod:`._publish`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from airflow_provider_batches.spend import UsageMeter
from airflow_provider_batches.transfers._publish import StagedFile
from airflow_provider_batches.transfers.big_lines import BIG_LINE_BYTES, BigLine
from airflow_provider_batches.transfers.verification import BatchLedger, parse_metered_block

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
    carry = b""  # the incomplete last line of the previous chunk
    big: BigLine | None = None  # a line too long to hold, streaming through a spool file
    for chunk in chunks:
        if big is not None:
            end = chunk.find(b"\n")
            big.feed(chunk if end < 0 else memoryview(chunk)[:end])
            if end < 0:
                progress.advance(len(chunk), 0, ledger.batch.id)
                continue
            progress.advance(end + 1, big.finish(), ledger.batch.id)
            big, chunk = None, chunk[end + 1 :]
        last = chunk.rfind(b"\n")
        if last < 0:
            carry += chunk
            if len(carry) > BIG_LINE_BYTES:
                big = BigLine(ledger, route, meter)
                big.feed(carry)
                progress.advance(len(carry), 0, ledger.batch.id)
                carry = b""
            continue
        # One block of whole lines per chunk: one decode and one write (the line straddling two
        # chunks is joined to the rest, a copy of the chunk that costs less than a second write).
        if carry:
            written = write_lines(carry + chunk[: last + 1], ledger, route, meter=meter)
        else:
            written = write_lines(chunk, ledger, route, end=last + 1, meter=meter)
        carry = chunk[last + 1 :]
        progress.advance(len(chunk), written, ledger.batch.id)
    if big is not None:
        progress.advance(0, big.finish(), ledger.batch.id)
    if carry:
        progress.advance(0, write_lines(carry + b"\n", ledger, route, meter=meter), ledger.batch.id)


def write_lines(
    data: bytes,
    ledger: BatchLedger,
    route: Route,
    *,
    begin: int = 0,
    end: int | None = None,
    meter: UsageMeter | None = None,
) -> int:
    """Verify the lines of ``data[begin:end]`` (which ends with LF) and write the new ones; returns how
    many were new.

    The hot path decodes the whole block in one call and, when every line is new and bound for one
    output, writes the received bytes as they are. Otherwise the kept lines are joined per output,
    normalised (LF, no blank lines).
    """
    end = len(data) if end is None else end
    view = memoryview(data)
    decoded = parse_metered_block(data, begin, end)
    if decoded is None:
        return _write_line_by_line(data, ledger, route, begin=begin, end=end, meter=meter)
    parsed, messages = decoded
    if meter is not None:
        meter.add_messages(messages)
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
    data: bytes, ledger: BatchLedger, route: Route, *, begin: int, end: int, meter: UsageMeter | None
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
            if meter is not None:
                meter.add_line(view[position:line_end])
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
