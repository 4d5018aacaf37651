"""The rounds of a re-driven job: which round is in flight, what the next one sends, the final outcome.

Round 1 is the job as submitted (the record's ``slices``); each later round is a
:class:`~airflow_provider_batches.job_state.RoundRecord`, recorded before any of its creates. The
next round is computed from the ended round's results, streamed (only the failing custom_ids are
kept), and its requests are the *original* lines of the input for those custom_ids
(:meth:`RequestSource.subset`), split by the same limits. Computing it again gives the same round,
so a retry that finds a round recorded recomputes it and re-attaches instead of sending it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.errors import APIConnectionError
from airflow_provider_batches.job_state import JobRecord, RoundRecord, SliceRecord, utcnow
from airflow_provider_batches.policy import total_counts
from airflow_provider_batches.redrive import Redrive, Selection, select_retryable
from airflow_provider_batches.requests import PreparedJob, RequestSource, prepare_job

if TYPE_CHECKING:
    from logging import Logger

    from airflow_provider_batches.hooks.anthropic import AnthropicHook

#: Times a broken results stream is read again from the start while selecting what to re-drive.
SELECTION_ATTEMPTS = 3


@dataclass(frozen=True)
class RoundState:
    """The round in flight (or the last one, once ended)."""

    number: int
    batch_ids: list[str]
    ended_counts: dict[str, dict[str, int]] | None
    record: RoundRecord | None  # None for round 1 (the record's own slices)


def current_round(record: JobRecord) -> RoundState:
    if record.rounds:
        last = record.rounds[-1]
        return RoundState(last.number, last.batch_ids, last.ended_counts, last)
    return RoundState(1, record.batch_ids, record.ended_counts, None)


def set_round_ended(record: JobRecord, number: int, counts: Mapping[str, Mapping[str, int]]) -> None:
    ended = {batch_id: dict(batch_counts) for batch_id, batch_counts in counts.items()}
    if number == 1:
        record.ended_counts = ended
    else:
        record.rounds[number - 2].ended_counts = ended


def round_batch_ids(record: JobRecord, number: int) -> list[str]:
    return record.batch_ids if number == 1 else record.rounds[number - 2].batch_ids


def round_slices(record: JobRecord, number: int) -> list[SliceRecord]:
    return record.slices if number == 1 else record.rounds[number - 2].slices


def waiting_batch_ids(record: JobRecord, number: int) -> list[str]:
    """The round's batches created and not yet ended: what the next wait is for."""
    return [
        part.batch_id for part in round_slices(record, number) if part.batch_id and part.ended_counts is None
    ]


def wait_label(record: JobRecord, number: int, waiting: list[str]) -> str:
    """What a wait's progress lines say it is for: the round and, when the round is sent in waves
    (``max_requests_in_flight``, a full queue), which of its batches are in flight."""
    slices = round_slices(record, number)
    label = f"round {number}"
    created = sum(1 for part in slices if part.batch_id)
    if created < len(slices) or len(waiting) < created:
        ended = sum(1 for part in slices if part.ended_counts is not None)
        label += f", wave: {len(waiting)} batch(es) in flight, {ended} of {len(slices)} ended"
    return label


def unsubmitted_slices(record: JobRecord, number: int) -> int:
    """How many slices of the round have no batch yet (held back by ``max_requests_in_flight`` or a
    full processing queue)."""
    return sum(1 for part in round_slices(record, number) if part.batch_id is None)


def record_batches_ended(record: JobRecord, number: int, counts: Mapping[str, Mapping[str, int]]) -> None:
    """Record the final counts of some of the round's batches; once every slice's batch has ended, the
    round has ended."""
    slices = round_slices(record, number)
    for part in slices:
        if part.batch_id is not None and part.batch_id in counts:
            part.ended_counts = dict(counts[part.batch_id])
    ended = {
        part.batch_id: part.ended_counts for part in slices if part.batch_id and part.ended_counts is not None
    }
    if len(ended) == len(slices):
        set_round_ended(record, number, ended)


def final_counts(record: JobRecord) -> dict[str, int] | None:
    """Per result type, the job's outcome after every round: each request counted once, by its last
    answer. None while a round is still waiting."""
    rounds = [(record.ended_counts, record.redriven)]
    rounds += [(later.ended_counts, later.redriven) for later in record.rounds]
    final: dict[str, int] = {}
    for ended, redriven in rounds:
        if ended is None:
            return None
        for kind, count in total_counts(ended).items():
            final[kind] = final.get(kind, 0) + count - (redriven or {}).get(kind, 0)
    return final


def rounds_manifest(record: JobRecord) -> list[dict[str, Any]]:
    """The manifest's ``rounds``: per round its batches, requests sent, counts and what went on."""
    entries = [(1, record.batch_ids, record.request_count, record.ended_counts, record.redriven)]
    entries += [
        (later.number, later.batch_ids, later.request_count, later.ended_counts, later.redriven)
        for later in record.rounds
    ]
    return [
        {
            "round": number,
            "batch_ids": batch_ids,
            "request_count": count,
            "request_counts": total_counts(ended) if ended is not None else None,
            "redriven": dict(redriven or {}),
        }
        for number, batch_ids, count, ended, redriven in entries
    ]


class JobRounds:
    """Plans a re-driven job's follow-up rounds from its source and the ended rounds' results."""

    def __init__(
        self,
        hook: AnthropicHook,
        policy: Redrive,
        source: RequestSource,
        *,
        max_requests: int,
        max_bytes: int,
        log: Logger,
    ) -> None:
        self.hook = hook
        self.policy = policy
        self.source = source
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.log = log
        self._jobs: dict[int, PreparedJob] = {}

    def plan_next(self, record: JobRecord) -> RoundRecord | None:
        """Record on ``record`` what the ended round re-drives; the next round (not yet saved), or None
        when nothing is left to re-drive or the last round allowed has run."""
        state = current_round(record)
        if state.number >= self.policy.max_rounds:
            self.log.info(
                "Round %d was the last one allowed (max_rounds=%d)", state.number, self.policy.max_rounds
            )
            return None
        selection = self._select(state.batch_ids)
        redriven = selection.redriven_counts()
        if state.record is None:
            record.redriven = redriven
        else:
            state.record.redriven = redriven
        if not selection.custom_ids:
            self.log.info("Round %d left nothing to re-drive", state.number)
            return None
        job = self._prepare(selection.custom_ids)
        number = state.number + 1
        self._jobs[number] = job
        not_before = (
            (utcnow() + timedelta(seconds=self.policy.delay)).isoformat() if self.policy.delay else None
        )
        self.log.info(
            "Re-driving %d request(s) of round %d as round %d (%s), in %d batch(es)",
            job.request_count,
            state.number,
            number,
            ", ".join(f"{count} {reason}" for reason, count in sorted(selection.reasons.items())),
            len(job.slices),
        )
        return RoundRecord.for_job(job, number, not_before=not_before)

    def job_of(self, record: JobRecord, number: int) -> PreparedJob:
        """Round ``number``'s requests, computed again from round ``number - 1``'s results if needed."""
        if number not in self._jobs:
            selection = self._select(round_batch_ids(record, number - 1))
            self._jobs[number] = self._prepare(selection.custom_ids)
        return self._jobs[number]

    def _prepare(self, custom_ids: set[str]) -> PreparedJob:
        return prepare_job(
            self.source.subset(custom_ids), max_requests=self.max_requests, max_bytes=self.max_bytes
        )

    def _select(self, batch_ids: list[str]) -> Selection:
        """The re-drivable custom_ids of the round's batches, results streamed (a broken stream is
        read again from the start)."""
        total = Selection()
        for batch_id in batch_ids:
            for attempt in range(1, SELECTION_ATTEMPTS + 1):
                selection = Selection()
                try:
                    select_retryable(self.policy, self.hook.iter_results_bytes(batch_id), selection)
                except APIConnectionError:
                    if attempt == SELECTION_ATTEMPTS:
                        raise
                    self.log.warning("Results stream of %s broke off; reading it again", batch_id)
                    continue
                break
            total.custom_ids |= selection.custom_ids
            total.reasons.update(selection.reasons)
        return total
