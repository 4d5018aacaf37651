"""One rule for every ``batch_id`` argument: a string, a list, or the create operator's manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def normalize_batch_ids(value: Any, *, field: str = "batch_id") -> list[str]:
    """Return the batch ids named by ``value``; raise ``ValueError`` naming ``field`` otherwise.

    Accepts ``"msgbatch_..."``, ``["msgbatch_...", ...]``, or a manifest ``{"batch_ids": [...]}`` as
    returned by AnthropicCreateBatchOperator, so that ``batch_id=create.output`` works.
    """
    if isinstance(value, Mapping):
        if "batch_ids" not in value:
            raise ValueError(
                f"{field}: a mapping must be the create operator's manifest with a 'batch_ids' key, "
                f"got keys {sorted(value)}"
            )
        value = value["batch_ids"]
    ids = [value] if isinstance(value, str) else value
    if not isinstance(ids, Sequence) or isinstance(ids, (bytes, bytearray)):
        kind = type(value).__name__
        raise ValueError(f"{field}: expected a batch id, a list of ids or a manifest, got {kind}")
    cleaned: list[str] = []
    for item in ids:
        if not isinstance(item, str) or not item.strip() or "/" in item:
            raise ValueError(f"{field}: {item!r} is not a batch id (like 'msgbatch_01Hk...')")
        if item.strip() not in cleaned:
            cleaned.append(item.strip())
    if not cleaned:
        raise ValueError(f"{field}: no batch id given (an empty list or a template that rendered to nothing)")
    return cleaned
