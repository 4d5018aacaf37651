"""The shapes of the ids the API hands out, and one rule for every ``batch_id`` argument.

Ids end up in URL paths, object names, records and log lines, so an id a server (or a gateway in
between) answers is data to check, not trust: :func:`check_batch_id` and :func:`check_custom_id`
are the only judges, for what users pass and for what the API answers alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

BATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""A batch id, matched whole: ``msgbatch_`` + base62 today ("format may change", API reference,
MessageBatch.id), so any prefix of letters, digits, ``_`` and ``-`` passes; never ``/``, ``.``,
whitespace or a control character, so an id cannot leave a URL path or a destination prefix."""
CUSTOM_ID_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""A custom_id, matched whole (``fullmatch``: a trailing newline is not allowed): the API's own rule
``^[a-zA-Z0-9_-]{1,64}$`` (API reference, create a Message Batch)."""


def is_batch_id(value: object) -> bool:
    return isinstance(value, str) and BATCH_ID_PATTERN.fullmatch(value) is not None


def is_custom_id(value: object) -> bool:
    return isinstance(value, str) and CUSTOM_ID_PATTERN.fullmatch(value) is not None


def shown(value: object) -> str:
    """An untrusted value as it may appear in a message: quoted, escaped, at most 80 characters."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:80]) + ("..." if len(text) > 80 else "")


def check_batch_id(value: object, what: str = "batch id") -> str:
    """``value`` when it is a batch id; ValueError naming ``what`` otherwise."""
    if not is_batch_id(value):
        raise ValueError(f"{what} {shown(value)} is not a batch id (like 'msgbatch_01Hk...')")
    assert isinstance(value, str)
    return value


def check_custom_id(value: object, what: str = "custom_id") -> str:
    """``value`` when it is a custom_id; ValueError naming ``what`` otherwise."""
    if not is_custom_id(value):
        raise ValueError(f"{what} {shown(value)} does not match ^[a-zA-Z0-9_-]{{1,64}}$")
    assert isinstance(value, str)
    return value


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
        item = check_batch_id(item.strip() if isinstance(item, str) else item, f"{field}:")
        if item not in cleaned:
            cleaned.append(item)
    if not cleaned:
        raise ValueError(f"{field}: no batch id given (an empty list or a template that rendered to nothing)")
    return cleaned
