"""The API's limits on a create body, and the envelope every body is streamed in."""

from __future__ import annotations

from airflow_provider_batches.proof import PROOF_RESERVED_BYTES

MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BYTES = 256_000_000
"""The create body's limit: "A Message Batch is limited to either 100,000 Message requests or 256 MB
in size, whichever is reached first" (platform.claude.com/docs/en/build-with-claude/batch-processing,
Batch limitations; read 2026-12-04). A request line longer than it fits in no batch."""
BODY_CHUNK_BYTES = 1 << 20
READ_CHUNK_BYTES = 1 << 20

BODY_START = b'{"requests":['
BODY_END = b"]}"
ENVELOPE_BYTES = len(BODY_START) + len(BODY_END)
MAX_LINE_BYTES = MAX_BATCH_BYTES - ENVELOPE_BYTES - PROOF_RESERVED_BYTES
"""A longer line fits in no batch (beside its proof request): it is refused while it streams, never
held whole."""


def too_long(max_bytes: int) -> str:
    """A line refused as it streamed: the file was not read past it. ``max_bytes`` is the batch limit
    less the proof request's reserved bytes."""
    return (
        f"is longer than the {max_bytes - ENVELOPE_BYTES:,} bytes a request can have in a "
        f"{max_bytes + PROOF_RESERVED_BYTES:,}-byte batch (less {PROOF_RESERVED_BYTES} bytes kept for the "
        "batch's proof request): split or shorten it (the file was not read further)"
    )


def over_limit(room: int) -> str:
    """``room`` is the batch limit less the proof request's reserved bytes."""
    return (
        f"over the {room + PROOF_RESERVED_BYTES:,}-byte batch limit (less {PROOF_RESERVED_BYTES} bytes kept "
        "for the batch's proof request): split or shorten it"
    )
