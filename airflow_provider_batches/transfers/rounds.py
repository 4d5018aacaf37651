"""Merging a re-driven job's rounds: one final result per custom_id, the last round's answer.

Rounds are downloaded last first. Every custom_id a later round answered is remembered (a set of at
most the re-driven ids) and an earlier round's line for it is verified but not published, so the
output holds each custom_id once. Each batch is still checked whole (counts, its own custom_id
digest); :func:`check_merged` then checks the published set against the first round's, which is
the whole job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_batches.identity import CustomIdDigest, combine_digests
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.transfers.verification import (
    BatchIdentity,
    BatchLedger,
    CheckedBlock,
    ResultsVerificationError,
)


def rounds_of(batch_id_argument: Any) -> dict[str, int]:
    """Each batch's round, from a re-driven job's manifest; empty for plain ids or a one-round job."""
    if not isinstance(batch_id_argument, Mapping):
        return {}
    rounds = batch_id_argument.get("rounds")
    if not isinstance(rounds, Sequence) or len(rounds) < 2:
        return {}
    return {
        str(batch_id): int(entry["round"])
        for entry in rounds
        if isinstance(entry, Mapping)
        for batch_id in entry.get("batch_ids", [])
    }


class RoundLedger(BatchLedger):
    """A batch's ledger that publishes a result only if no later round answered its custom_id."""

    def __init__(
        self,
        batch: MessageBatch,
        expected: BatchIdentity | None,
        *,
        round_number: int,
        answered_later: set[str],
        published_ids: CustomIdDigest,
        proof_id: str | None = None,
    ) -> None:
        super().__init__(batch, expected, proof_id)
        self.round_number = round_number
        #: Shared by the job's ledgers: custom_ids of the rounds downloaded so far (the later ones).
        self.answered_later = answered_later
        self.published_ids = published_ids
        self.published: dict[str, int] = {}
        self.superseded = 0

    @property
    def published_counts(self) -> dict[str, int]:
        return self.published

    def admit_parsed(self, custom_id: str, kind: str) -> str | None:
        later = custom_id in self.answered_later
        admitted = super().admit_parsed(custom_id, kind)
        if admitted is None:  # written by an earlier attempt of this download
            return None
        if later:
            self.superseded += 1
            return None
        self.answered_later.add(custom_id)
        self.published_ids.add(custom_id)
        self.published[admitted] = self.published.get(admitted, 0) + 1
        return admitted

    def admit_block(self, checked: CheckedBlock) -> Sequence[str | None]:
        return [
            self.admit_parsed(custom_id, kind)
            for custom_id, kind in zip(checked.custom_ids, checked.kinds, strict=True)
        ]


def round_ledgers(
    batches: Sequence[MessageBatch],
    expected: Mapping[str, BatchIdentity],
    rounds: Mapping[str, int],
    proofs: Mapping[str, str] | None = None,
) -> tuple[list[BatchLedger], CustomIdDigest]:
    """The ledgers in download order (last round first) and the digest of what they publish."""
    answered: set[str] = set()
    published = CustomIdDigest()
    ledgers: list[BatchLedger] = [
        RoundLedger(
            batch,
            expected.get(batch.id),
            round_number=rounds.get(batch.id, 1),
            answered_later=answered,
            published_ids=published,
            proof_id=(proofs or {}).get(batch.id),
        )
        for batch in batches
    ]
    ledgers.sort(key=lambda ledger: -getattr(ledger, "round_number", 1))
    return ledgers, published


def check_merged(
    ledgers: Sequence[BatchLedger],
    expected: Mapping[str, BatchIdentity],
    rounds: Mapping[str, int],
    published: CustomIdDigest,
) -> BatchIdentity:
    """The merged output holds exactly the first round's custom_ids, each once."""
    first = [
        expected[batch_id] for batch_id, number in rounds.items() if number == 1 and batch_id in expected
    ]
    received = BatchIdentity(published.count, published.hexdigest())
    if first:
        whole = BatchIdentity(
            sum(identity.request_count for identity in first),
            combine_digests(identity.custom_ids_digest for identity in first),
        )
        if received != whole:
            raise ResultsVerificationError(
                f"the merged output of {len(ledgers)} batch(es) holds {received.request_count} custom_ids "
                f"(digest {received.custom_ids_digest[:16]}), not the job's {whole.request_count} (digest "
                f"{whole.custom_ids_digest[:16]}): a round's results do not cover the requests it re-drove; "
                "nothing was published"
            )
    return received
