"""Verification of downloaded results: every line parsed, every custom_id once, counts as promised.

Pure bookkeeping, no I/O: :class:`BatchLedger` tracks what one batch's download delivered (across
retried attempts) and checks it against the batch's ``request_counts`` and, when the job's manifest
gives it, against the set of custom_ids the job submitted to that batch (its identity).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

from airflow_provider_batches.batch_ids import CUSTOM_ID_PATTERN, is_custom_id, shown
from airflow_provider_batches.errors import AnthropicBatchesError
from airflow_provider_batches.identity import digest_of
from airflow_provider_batches.models import RESULT_TYPES, MessageBatch
from airflow_provider_batches.proof import holds_proof_id, is_proof_id
from airflow_provider_batches.result_lines import ResultLine, decode_block, decode_line

__all__ = [
    "RESULT_TYPES",
    "BatchIdentity",
    "BatchLedger",
    "CheckedBlock",
    "ResultsVerificationError",
    "checked_block",
    "checked_fields",
    "expected_identities",
    "parse_result_block",
    "parse_result_line",
    "unchecked_reason",
]

#: A result type also names a file in split mode, so it must be a plain word.
_RESULT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ResultsVerificationError(AnthropicBatchesError):
    """Downloaded results do not match their batch (a bad line, a repeated custom_id, wrong counts)."""


#: The custom_ids of a block, joined by LF, each valid: one regex call per block, not one per line
#: (a valid custom_id holds no LF, so the joined check is the same as each one's).
_CUSTOM_IDS = re.compile(f"(?:{CUSTOM_ID_PATTERN.pattern}\n)*")
_CUSTOM_ID = attrgetter("custom_id")
_KIND = attrgetter("result.type")


class CheckedBlock(NamedTuple):
    """A decoded block's custom_ids and result types, every one valid, and whether a proof id is
    among them (searched once here, for the ledger and the meter)."""

    custom_ids: list[str]
    kinds: list[str]
    holds_proof: bool


def checked_block(lines: Sequence[ResultLine[Any]]) -> CheckedBlock | None:
    """The custom_ids and result types of a decoded block when every one of them is valid; None when
    some line must be checked alone (:func:`checked_fields` names what is wrong with it)."""
    custom_ids = list(map(_CUSTOM_ID, lines))
    joined = "\n".join(custom_ids)
    if _CUSTOM_IDS.fullmatch(joined + "\n") is None:
        return None
    kinds = list(map(_KIND, lines))
    if not all(map(_RESULT_TYPE_PATTERN.match, set(kinds))):  # a few kinds
        return None
    return CheckedBlock(custom_ids, kinds, holds_proof_id(custom_ids, joined))


def parse_result_block(block: bytes) -> list[tuple[str, str]] | None:
    """``(custom_id, type)`` of every line of a block of LF-terminated lines, decoded in one C call.

    None when any line needs the line-by-line path: a CR or blank line to drop, or a line that is
    not a valid result (that path names the line and what is wrong with it).
    """
    lines = decode_block(block)
    checked = None if lines is None else checked_block(lines)
    return None if checked is None else list(zip(checked.custom_ids, checked.kinds, strict=True))


def parse_result_line(line: bytes | memoryview) -> tuple[str, str]:
    """``(custom_id, result type)`` of one JSONL line, or ValueError saying what is wrong with it."""
    parsed = decode_line(line)
    return checked_fields(parsed.custom_id, parsed.result.type)


def checked_fields(custom_id: object, kind: object) -> tuple[str, str]:
    """A result line's custom_id and result type, or ValueError saying which one no result can have."""
    if not is_custom_id(custom_id):
        raise ValueError(
            f"has custom_id {shown(custom_id)}, which no request can have (^[a-zA-Z0-9_-]{{1,64}}$)"
        )
    assert isinstance(custom_id, str)
    if not isinstance(kind, str) or not _RESULT_TYPE_PATTERN.match(kind):
        raise ValueError(f"(custom_id {custom_id!r}) has an invalid result.type")
    return custom_id, kind


@dataclass(frozen=True)
class BatchIdentity:
    """The set of custom_ids a batch holds, as its size and order-independent digest."""

    request_count: int
    custom_ids_digest: str

    def to_json(self) -> dict[str, Any]:
        return {"request_count": self.request_count, "custom_ids_digest": self.custom_ids_digest}


def expected_identities(batch_id_argument: Any) -> dict[str, BatchIdentity]:
    """The per-batch identities in a create operator's manifest (none for plain batch ids)."""
    if not isinstance(batch_id_argument, Mapping):
        return {}
    batches = batch_id_argument.get("batches")
    if not isinstance(batches, Mapping):
        return {}
    found: dict[str, BatchIdentity] = {}
    for batch_id, entry in batches.items():
        if isinstance(entry, Mapping) and entry.get("custom_ids_digest"):
            found[str(batch_id)] = BatchIdentity(int(entry["request_count"]), str(entry["custom_ids_digest"]))
    return found


def unchecked_reason(
    batch_id_argument: Any, expected: Mapping[str, BatchIdentity], batch_id: str
) -> str | None:
    """Why the results of ``batch_id`` cannot be checked against the job's custom_ids, or None when
    they are: said in the manifest and the log, never a silent ``"checked": false``."""
    if batch_id in expected:
        return None
    if not isinstance(batch_id_argument, Mapping):
        return (
            "batch_id gave plain ids, not the create operator's manifest, so the job's custom_ids are "
            "unknown here: pass batch_id=create.output to check them"
        )
    return "the create operator's manifest has no custom_ids digest for this batch (an older manifest)"


class BatchLedger:
    """What one batch's download delivered: counts per result type and custom_ids, across retries.

    A retried download starts again from the first byte. Lines an interrupted attempt already wrote
    are recognised by custom_id and not written twice, so outputs shared by several batches (split
    mode) never need rewinding. The custom_ids are dropped once the batch is verified, so a job holds
    those of one batch at a time (at most 100,000).

    The proof request (:mod:`~airflow_provider_batches.proof`) is not the user's: its line is never
    written, and the counts and custom_id digest are checked without it. A batch that should carry the
    job's proof and does not, or carries another, is another job's batch: nothing is published.
    """

    def __init__(
        self, batch: MessageBatch, expected: BatchIdentity | None = None, proof_id: str | None = None
    ) -> None:
        self.batch = batch
        #: What the job submitted to this batch (from the create operator's manifest), if known.
        self.expected = expected
        #: The custom_id of the proof request the job put in this batch (from the manifest), if known.
        self.expected_proof = proof_id
        #: How the batch's proof request ended (None: no proof line seen).
        self.proof_kind: str | None = None
        self._proof_seen = False
        #: What the results carried, once verified.
        self.identity: BatchIdentity | None = None
        self.counts: dict[str, int] = dict.fromkeys(RESULT_TYPES, 0)
        self.results = 0
        self._written: set[str] = set()
        self._attempt_seen: set[str] = self._written
        self._line_number = 0

    @property
    def published_counts(self) -> dict[str, int]:
        """Counts per result type of the lines written to the output (a round merge writes fewer)."""
        return self.counts

    def start_attempt(self) -> None:
        # While nothing is written yet, one set serves both purposes (half the memory).
        self._attempt_seen = set() if self._written else self._written
        self._line_number = 0
        self._proof_seen = False

    def admit(self, line: bytes | memoryview) -> str | None:
        """The line's result type if it must be written; None if an earlier attempt wrote it."""
        try:
            parsed = decode_line(line)
        except ValueError as exc:
            raise self.line_error(str(exc)) from None
        return self.admit_line(parsed)

    def admit_line(self, line: ResultLine[Any]) -> str | None:
        """:meth:`admit` for a line already decoded: its custom_id and type checked, then admitted."""
        try:
            custom_id, kind = checked_fields(line.custom_id, line.result.type)
        except ValueError as exc:
            raise self.line_error(str(exc)) from None
        return self.admit_parsed(custom_id, kind)

    def line_error(self, detail: str) -> ResultsVerificationError:
        """The error for the line about to be admitted: ``detail`` says what is wrong with it."""
        return self._error(f"line {self._line_number + 1} {detail}")

    def admit_parsed(self, custom_id: str, kind: str) -> str | None:
        """:meth:`admit` for a line already parsed."""
        self._line_number += 1
        if is_proof_id(custom_id):
            return self._admit_proof(custom_id, kind)
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

    def admit_block(self, checked: CheckedBlock) -> Sequence[str | None]:
        """:meth:`admit_parsed` for a block of checked lines (:func:`checked_block`), with set operations
        when all of them are new and none is a proof request: then its ``kinds`` list is returned."""
        custom_ids, kinds = checked.custom_ids, checked.kinds
        ids = set(custom_ids)
        if (
            checked.holds_proof
            or self._attempt_seen is not self._written  # a retried attempt: each line's own check
            or len(ids) != len(custom_ids)
            or not ids.isdisjoint(self._written)
        ):
            return [
                self.admit_parsed(custom_id, kind) for custom_id, kind in zip(custom_ids, kinds, strict=True)
            ]
        self._written |= ids
        self._line_number += len(custom_ids)
        self.results += len(custom_ids)
        counts = self.counts
        for kind, count in Counter(kinds).items():
            counts[kind] = counts.get(kind, 0) + count
        return kinds

    def _admit_proof(self, custom_id: str, kind: str) -> str | None:
        """Note the batch's proof request (never written); refuse a second one or another job's."""
        if self._proof_seen:
            raise self._error(f"a second proof request {custom_id!r} (line {self._line_number})")
        if self.expected_proof is not None and custom_id != self.expected_proof:
            raise self._error(
                f"its results carry proof request {custom_id!r}, not the job's {self.expected_proof!r}: it "
                "is another job's batch. Do not cancel or delete it; check the create task's record"
            )
        self._proof_seen = True
        self.proof_kind = kind
        return None

    def finish(self) -> None:
        """Check a complete download against the batch's ``request_counts``."""
        if len(self._attempt_seen) != len(self._written):
            raise self._error(
                f"the results changed between download attempts ({len(self._written)} custom_ids "
                f"written, {len(self._attempt_seen)} in the last download)"
            )
        if self.expected_proof is not None and self.proof_kind is None:
            raise self._error(
                f"its results lack the job's proof request {self.expected_proof!r}: it is not the batch the "
                "job created (another job's?). Do not cancel or delete it; check the create task's record"
            )
        expected = {kind: count for kind, count in self.batch.request_counts.as_dict().items()}
        expected.pop("processing", None)
        if self.proof_kind is not None:  # the proof request is in request_counts, not in the output
            expected[self.proof_kind] = expected.get(self.proof_kind, 0) - 1
        mismatches = [
            f"{kind}: expected {expected.get(kind, 0)}, got {self.counts.get(kind, 0)}"
            for kind in sorted(expected.keys() | self.counts.keys())
            if expected.get(kind, 0) != self.counts.get(kind, 0)
        ]
        if mismatches:
            raise self._error(
                "result counts differ from the batch's request_counts: " + "; ".join(mismatches)
            )
        received = BatchIdentity(len(self._written), digest_of(self._written))
        if self.expected is not None and received != self.expected:
            raise self._error(
                f"its results carry other custom_ids than the job submitted to it ({received.request_count} "
                f"results, custom_ids digest {received.custom_ids_digest[:16]}; the job's record says "
                f"{self.expected.request_count} requests, digest {self.expected.custom_ids_digest[:16]}). "
                "They may be another job's results. Check which job created this batch in the Anthropic "
                "console; clear the create task to submit the job afresh"
            )
        self.identity = received
        self._written = self._attempt_seen = set()  # verified: the ids are no longer needed

    def _error(self, detail: str) -> ResultsVerificationError:
        return ResultsVerificationError(f"batch {self.batch.id}: {detail}; nothing was published")
