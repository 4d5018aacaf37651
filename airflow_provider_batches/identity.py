"""Which requests a batch holds, as a small digest: the proof that results belong to their job.

The create operator records, per batch, the digest of the custom_ids it submitted; the results
transfer recomputes it from the results it received and publishes nothing when the two differ. The
digest does not depend on order (results come back in any order) and needs constant memory: it is
the sum, modulo 2**128, of a 128-bit BLAKE2b hash of each custom_id (custom_ids are unique within a
job, so a sum of distinct hashes identifies the set).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

_MODULUS = 1 << 128


def custom_id_hash(custom_id: str | bytes) -> int:
    data = custom_id.encode("utf-8") if isinstance(custom_id, str) else custom_id
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


@dataclass
class CustomIdDigest:
    """Accumulates custom_ids in any order; equal sets give equal ``hexdigest()``."""

    count: int = 0
    _sum: int = 0

    def add(self, custom_id: str | bytes) -> None:
        self.add_hash(custom_id_hash(custom_id))

    def add_hash(self, id_hash: int) -> None:
        """Add a custom_id by its :func:`custom_id_hash` (computed once, also for the duplicate check)."""
        self._sum = (self._sum + id_hash) % _MODULUS
        self.count += 1

    def hexdigest(self) -> str:
        return f"{self._sum:032x}"


def digest_of(custom_ids: Iterable[str]) -> str:
    """The digest of a set of custom_ids in one pass: :func:`custom_id_hash` inlined (it runs once
    per result at the end of every export, 100,000 times for a full batch)."""
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    total = sum(from_bytes(blake2b(custom_id.encode(), digest_size=16).digest()) for custom_id in custom_ids)
    return f"{total % _MODULUS:032x}"


def combine_digests(hexdigests: Iterable[str]) -> str:
    """The digest of the union of disjoint sets, from their digests (the digest is a sum)."""
    return f"{sum(int(value, 16) for value in hexdigests) % _MODULUS:032x}"
