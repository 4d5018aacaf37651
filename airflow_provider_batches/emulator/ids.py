"""Identifiers and timestamps in the API's formats."""

from __future__ import annotations

import datetime
import hashlib
import secrets

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def hashed_base62(material: str, length: int) -> str:
    """Deterministic base62 text derived from ``material`` (stable ids for deterministic answers)."""
    number = int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest(), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    return "".join(chars)


def new_batch_id() -> str:
    """``msgbatch_`` + 24 base62 characters; the store re-draws on the (astronomically rare) clash."""
    return "msgbatch_" + random_base62(24)


def new_request_id() -> str:
    return "req_emu_" + random_base62(24)


def rfc3339(epoch_seconds: float) -> str:
    """RFC 3339 with a ``Z`` suffix and microseconds, as the API writes timestamps."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
