"""What the create operator returns (its XCom): small, and accepted by every ``batch_id`` argument."""

from __future__ import annotations

from typing import Any

from airflow_provider_batches.job_state import JobRecord
from airflow_provider_batches.policy import total_counts


def job_manifest(record: JobRecord) -> dict[str, Any]:
    """The job's batch ids, request count, fingerprint and, per batch, its request count and custom_id
    digest, which the results transfer checks the results against before publishing anything. A job of
    more than one round (or run with ``redrive``) lists the batches of every round in ``batch_ids`` and
    ``batches``, and its ``rounds``."""
    manifest: dict[str, Any] = {
        "batch_ids": record.all_batch_ids,
        "request_count": record.request_count,
        "fingerprint": record.fingerprint,
        "batches": record.batches(),
    }
    if record.redrive is not None:
        manifest["redrive"] = record.redrive
    if record.redrive is not None or len(record.rounds) > 1:
        manifest["rounds"] = rounds_manifest(record)
    return manifest


def rounds_manifest(record: JobRecord) -> list[dict[str, Any]]:
    """The manifest's ``rounds``: per round its kind, batches, requests sent, counts and what went on."""
    return [
        {
            "round": each.number,
            "kind": each.kind,
            "batch_ids": each.batch_ids,
            "request_count": each.request_count,
            "request_counts": total_counts(each.ended_counts) if each.ended_counts is not None else None,
            "redriven": dict(each.redriven or {}),
        }
        for each in record.rounds
    ]
