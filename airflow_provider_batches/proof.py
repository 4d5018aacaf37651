"""The proof request: how a job tells its own batch from a stranger's after a lost create.

The API has no idempotency key and no caller metadata, and the listing shows only a batch's size and
time, which other jobs on the same API key share (jobs built from one template even share their
custom_ids). So every batch the create operator sends carries one extra, tiny request whose custom_id
is a random nonce drawn for that create (``abp-proof-<32 hex>``) and written to the job's record with
the intent, *before* the paid call. Only that create can have put the nonce in a batch: once a
candidate batch has ended, its results either carry the nonce (it is this create's batch) or not.

This module is the one home of the rule: the reserved prefix, the request's bytes, the room slicing
keeps for it, finding the nonce in a results stream, and taking its result out of a batch's counts.
No I/O: callers hand it the results' chunks.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_batches.errors import APIConnectionError
from airflow_provider_batches.result_lines import BlockSplitter, decode_line, split_lines

PROOF_PREFIX = "abp-proof-"
"""custom_ids starting with this are the provider's; an input that uses it is refused before spend."""

#: A proof request asks for one output token; its prompt is this one character.
PROOF_PROMPT = "."
#: Bytes a batch body keeps free for its proof request (the comma before it included): room for a
#: model id of up to 300 characters. ``proof_request`` refuses a longer one.
PROOF_RESERVED_BYTES = 512
#: Requests a batch keeps free for its proof request.
PROOF_RESERVED_REQUESTS = 1


def new_proof_id() -> str:
    """A fresh nonce for one create: 128 random bits, never reused by another create or job."""
    return PROOF_PREFIX + secrets.token_hex(16)


def is_proof_id(custom_id: str) -> bool:
    return custom_id.startswith(PROOF_PREFIX)


def holds_proof_id(custom_ids: Sequence[str], joined: str | None = None) -> bool:
    """Whether any of ``custom_ids`` is a proof id. A block of results holds one at most, mostly none:
    one C-level search of their LF-joined text (``joined``, when the caller has it) rules it out
    without a call per id."""
    text = "\n".join(custom_ids) if joined is None else joined
    return PROOF_PREFIX in text and any(map(is_proof_id, custom_ids))


def proof_request(proof_id: str, model: str) -> bytes:
    """The proof request's JSON, as appended to a batch body: one user character, ``max_tokens`` 1."""
    encoded = json.dumps(
        {
            "custom_id": proof_id,
            "params": {
                "model": model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": PROOF_PROMPT}],
            },
        },
        separators=(",", ":"),
    ).encode()
    if len(encoded) + 1 > PROOF_RESERVED_BYTES:
        raise ValueError(f"model id {model[:80]!r}... is too long for the proof request's reserved room")
    return encoded


def find_proof(chunks: Iterable[bytes], proof_id: str) -> str | None:
    """The result type of ``proof_id``'s line in a batch's JSONL results, or None when it is absent.

    Reads only as far as the marker (it may come anywhere: results are in no promised order). A line
    is taken as the proof only when it parses and its ``custom_id`` is exactly ``proof_id``: the nonce
    quoted inside another request's answer text proves nothing.
    """
    marker = proof_id.encode()
    splitter = BlockSplitter()
    for chunk in chunks:
        found = _proof_in(splitter.feed(chunk), marker, proof_id)
        if found is not None:
            return found
    return _proof_in(splitter.flush(), marker, proof_id)


#: Times a broken results stream is read again from the start while looking for a proof.
READ_ATTEMPTS = 4


def read_proof(results: Callable[[str], Iterable[bytes]], batch_id: str, proof_id: str) -> str | None:
    """:func:`find_proof` in ``results(batch_id)`` (a batch's JSONL chunks), read again from the start
    when the stream breaks off, up to :data:`READ_ATTEMPTS` times."""
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return find_proof(results(batch_id), proof_id)
        except APIConnectionError:
            if attempt == READ_ATTEMPTS:
                raise
    return None  # pragma: no cover (the loop returns or raises)


def _proof_in(block: bytes | None, marker: bytes, proof_id: str) -> str | None:
    """The result type of ``proof_id``'s line in a block of whole lines, decoded only where the marker is."""
    if block is None or marker not in block:
        return None
    for line in split_lines(block):
        if marker not in line:
            continue
        try:
            parsed = decode_line(line)
        except ValueError:
            continue
        if parsed.custom_id == proof_id:
            return parsed.result.type
    return None


def without_proof(counts: Mapping[str, int], proof_kind: str | None) -> dict[str, int]:
    """A batch's ``request_counts`` less its proof request (which ended as ``proof_kind``)."""
    user = dict(counts)
    if proof_kind is not None and user.get(proof_kind, 0) > 0:
        user[proof_kind] -= 1
    return user


def proof_kind_from_counts(counts: Mapping[str, int]) -> str | None:
    """The proof's result type when the counts alone say it: every request ended the same way."""
    ended = {kind: count for kind, count in counts.items() if kind != "processing" and count > 0}
    return next(iter(ended)) if len(ended) == 1 else None


def manifest_proofs(batch_id_argument: Any) -> dict[str, str]:
    """Per batch of a create operator's manifest, the custom_id of the proof request it carries
    (none for plain batch ids)."""
    batches = batch_id_argument.get("batches") if isinstance(batch_id_argument, Mapping) else None
    if not isinstance(batches, Mapping):
        return {}
    return {
        str(batch_id): str(entry["proof_custom_id"])
        for batch_id, entry in batches.items()
        if isinstance(entry, Mapping) and entry.get("proof_custom_id")
    }


def counts_without_proofs(
    counts: Mapping[str, Mapping[str, int]],
    proofs: Mapping[str, str],
    results: Callable[[str], Iterable[bytes]],
    kinds: dict[str, str | None],
) -> dict[str, dict[str, int]]:
    """Ended batches' ``request_counts`` less their proof requests, for the outcome policy.

    ``proofs`` maps a batch to its proof custom_id; ``kinds`` holds the proof result types already
    known and receives the ones learnt here: from the counts when every request ended alike, else
    from the batch's results (``results(batch_id)``: its JSONL chunks, read up to the proof line).
    """
    user: dict[str, dict[str, int]] = {}
    for batch_id, batch_counts in counts.items():
        proof_id = proofs.get(batch_id)
        if proof_id is None:
            user[batch_id] = dict(batch_counts)
            continue
        if kinds.get(batch_id) is None:
            kinds[batch_id] = proof_kind_from_counts(batch_counts) or read_proof(results, batch_id, proof_id)
        user[batch_id] = without_proof(batch_counts, kinds[batch_id])
    return user
