"""Identifiers and timestamps in the API's formats."""

from __future__ import annotations

import datetime
import hashlib
import secrets

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


_PAIRS = [BASE62[low] + BASE62[high] for high in range(62) for low in range(62)]
"""Two base62 digits at once, least significant first: ``_PAIRS[low + 62 * high]``."""


def hashed_base62(material: str | bytes, length: int) -> str:
    """Deterministic base62 text derived from ``material`` (stable ids for deterministic answers): the
    ``length`` least significant base62 digits of its sha256, least significant first."""
    data = material.encode("utf-8") if isinstance(material, str) else material
    number = int.from_bytes(hashlib.sha256(data).digest(), "big") % 62**length
    chars = []
    for _ in range(length // 2):  # two digits per division: ids are made for every result line
        number, pair = divmod(number, 3844)
        chars.append(_PAIRS[pair])
    if length % 2:
        chars.append(BASE62[number % 62])
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
