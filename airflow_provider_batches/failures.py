"""Why requests failed: the top error types of a job, read from its results, for the outcome's message.

A batch's ``request_counts`` say how many requests ended ``errored`` or ``expired``, never why. The
reason is in each errored result line (``result.error.error.type`` and ``.message``), so
:func:`summarize_errors` reads the results streams of the batches that have errors, newest round
first, and tallies them per error type: count, one example message, a few custom_ids, the rounds.

Cost: downloading results is free (no tokens are billed) and nothing is written anywhere. The scan
is bounded: a batch's stream is closed once all of its errored and expired lines are seen, and the
whole scan stops after :data:`MAX_FAILED_LINES` failed lines or :data:`MAX_SCAN_BYTES` bytes, in
which case the summary says how many of the failures it read. A scan that cannot be done (results
archived, the network) never hides the outcome: the summary then says why it has no details.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.proof import is_proof_id
from airflow_provider_batches.result_lines import BlockSplitter, ResultLine, decode_good_lines, decode_line

if TYPE_CHECKING:
    from airflow_provider_batches.hooks.anthropic import AnthropicHook

__all__ = [
    "MAX_FAILED_LINES",
    "MAX_SCAN_BYTES",
    "ErrorSummary",
    "ErrorType",
    "ResultLine",
    "decode_result_line",
    "summarize_errors",
]

#: ``(round, batch id, result type, error type)``: whether a later round sent this failure again.
Superseded = Callable[[int, str, str, "str | None"], bool]

#: Failed (errored or expired) result lines read at most, over the whole job.
MAX_FAILED_LINES = 1_000
#: Results bytes read at most, over the whole job (a failure late in a big batch may stay unread).
MAX_SCAN_BYTES = 256 * 1024 * 1024
#: custom_ids kept per error type, and error types named in a message.
SAMPLE_CUSTOM_IDS = 3
TOP_TYPES = 3
#: What an expired line says (it carries no error of its own).
EXPIRED_MESSAGE = "the batch expired before this request was processed"
#: An example message is cut to this many characters.
MAX_EXAMPLE_CHARS = 300


#: A result line's custom_id, type and error, as every reader decodes it (here and in re-drive planning).
decode_result_line = decode_line


@dataclass
class ErrorType:
    """One kind of failure: how often it was read, one example, some custom_ids, its rounds."""

    type: str
    count: int = 0
    example: str = ""
    custom_ids: list[str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "count": self.count,
            "example": self.example,
            "custom_ids": list(self.custom_ids),
            "rounds": list(self.rounds),
        }

    def describe(self) -> str:
        rounds = ", ".join(str(number) for number in self.rounds)
        text = f"{self.type} x{self.count} (round {rounds})"
        if self.example:
            text += f": {self.example!r}"
        return f"{text}; custom_ids {', '.join(self.custom_ids)}"


@dataclass
class ErrorSummary:
    """The failures of a job as read from its results (see the module's note on the bound)."""

    failed: int = 0  # errored + expired per the counts
    read: int = 0  # of those, the lines read
    types: dict[str, ErrorType] = field(default_factory=dict)
    note: str = ""  # why the read stopped short, when it did

    def add(self, kind: str, message: str, custom_id: str, round_number: int) -> None:
        entry = self.types.setdefault(kind, ErrorType(kind))
        entry.count += 1
        if not entry.example and message:
            entry.example = message[:MAX_EXAMPLE_CHARS]
        if len(entry.custom_ids) < SAMPLE_CUSTOM_IDS and custom_id not in entry.custom_ids:
            entry.custom_ids.append(custom_id)
        if round_number not in entry.rounds:
            entry.rounds.append(round_number)
            entry.rounds.sort()
        self.read += 1

    def top(self) -> list[ErrorType]:
        return sorted(self.types.values(), key=lambda entry: (-entry.count, entry.type))

    def to_json(self) -> dict[str, Any]:
        return {
            "failed": self.failed,
            "read": self.read,
            "types": [entry.to_json() for entry in self.top()],
            "note": self.note,
        }

    def describe(self) -> str:
        """One line for a task log or an exception: the top error types, with their examples."""
        if not self.failed:
            return ""
        if not self.types:
            return f"error types unknown ({self.note or 'no failed result line was read'})"
        shown = self.top()[:TOP_TYPES]
        head = f"top error types, from {self.read} of {self.failed} failed results read"
        more = len(self.types) - len(shown)
        tail = f"; and {more} more type(s)" if more > 0 else ""
        note = f" ({self.note})" if self.note else ""
        return f"{head}{note}: " + " | ".join(entry.describe() for entry in shown) + tail


def _failed_count(counts: Mapping[str, int]) -> int:
    return int(counts.get("errored", 0)) + int(counts.get("expired", 0))


def summarize_errors(
    hook: AnthropicHook,
    rounds: Sequence[tuple[int, Mapping[str, Mapping[str, int]]]],
    *,
    max_failed_lines: int = MAX_FAILED_LINES,
    max_bytes: int = MAX_SCAN_BYTES,
    superseded: Superseded | None = None,
    failed: int | None = None,
) -> ErrorSummary:
    """Tally the failed results of ``rounds`` (round number, ended counts per batch), newest first.

    After follow-up rounds, ``superseded(round, batch_id, kind, error_type)`` says which failures a
    later round sent again (their last answer is there, not here), and ``failed`` is the job's final
    failure count.
    """
    summary = ErrorSummary()
    ordered = sorted(rounds, key=lambda item: -item[0])
    summary.failed = (
        failed
        if failed is not None
        else sum(_failed_count(counts) for _, ended in ordered for counts in ended.values())
    )
    scan = _Scan(max_failed_lines, max_bytes, superseded)
    for number, ended in ordered:
        for batch_id, counts in ended.items():
            wanted = _failed_count(counts)
            if not wanted or scan.exhausted(summary):
                continue
            try:
                scan.batch(hook, batch_id, number, wanted, summary)
            except Exception as exc:  # the outcome matters more than its details
                summary.note = f"results of {batch_id} could not be read: {type(exc).__name__}: {exc}"
    if scan.exhausted(summary) and summary.read < summary.failed:
        summary.note = f"the scan stops after {max_failed_lines:,} failed lines or {max_bytes:,} bytes"
    return summary


@dataclass
class _Scan:
    """The scan's bounds, over every batch it reads."""

    max_lines: int
    bytes_left: int
    superseded: Superseded | None = None

    def exhausted(self, summary: ErrorSummary) -> bool:
        return summary.read >= self.max_lines or self.bytes_left <= 0

    def batch(
        self, hook: AnthropicHook, batch_id: str, number: int, wanted: int, summary: ErrorSummary
    ) -> None:
        """Read one batch's results until its ``wanted`` failed lines are seen or a bound is hit."""
        splitter = BlockSplitter()
        limit = min(summary.read + wanted, self.max_lines)
        chunks = hook.iter_results_bytes(batch_id)
        try:
            for chunk in chunks:
                self.bytes_left -= len(chunk)
                _tally(splitter.feed(chunk), number, batch_id, summary, limit, self.superseded)
                if summary.read >= limit or self.bytes_left <= 0:
                    return
            _tally(splitter.flush(), number, batch_id, summary, limit, self.superseded)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


def _tally(
    block: bytes | None,
    number: int,
    batch_id: str,
    summary: ErrorSummary,
    limit: int,
    superseded: Superseded | None,
) -> None:
    if block is None or (b'"errored"' not in block and b'"expired"' not in block):
        return  # no failed line in the block: skipped without decoding
    for line in decode_good_lines(block):
        if summary.read >= limit:
            return
        kind = line.result.type
        if kind not in ("errored", "expired") or is_proof_id(line.custom_id):
            continue  # the proof request's failure is not the user's (``proof.py``)
        error = line.result.error
        error_type, message = error.detail if error is not None else (None, None)
        if superseded is not None and superseded(number, batch_id, kind, error_type or None):
            continue  # sent again in a later round: its last answer is there
        if kind == "expired":
            summary.add("expired", EXPIRED_MESSAGE, line.custom_id, number)
        else:
            summary.add(error_type or "unknown_error", message or "", line.custom_id, number)
