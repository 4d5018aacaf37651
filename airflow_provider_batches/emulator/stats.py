"""Counters that tests read through ``GET /_emulator/stats``: what the client actually did."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

MAX_DISTINCT_BETAS = 100
_BATCH_PATH_RE = re.compile(r"^/v1/messages/batches/[^/]+")


def route_label(method: str, path: str) -> str:
    """``GET /v1/messages/batches/{id}`` style labels: bounded cardinality, whatever the ids."""
    return f"{method} {_BATCH_PATH_RE.sub('/v1/messages/batches/{id}', path)}"


class Stats:
    """Thread-safe counters; every key space is bounded (routes, accepted keys, capped betas)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._calls: dict[str, Counter[str]] = {}
            self._batches_created: Counter[str] = Counter()
            self._requests_received = 0
            self._betas_seen: Counter[str] = Counter()
            self._faults_injected: Counter[str] = Counter()

    def record_call(self, label: str, status: int) -> None:
        with self._lock:
            self._calls.setdefault(label, Counter())[str(status)] += 1

    def record_batch(self, key_label: str, request_count: int) -> None:
        with self._lock:
            self._batches_created[key_label] += 1
            self._requests_received += request_count

    def record_betas(self, betas: list[str]) -> None:
        with self._lock:
            for beta in betas:
                if beta in self._betas_seen or len(self._betas_seen) < MAX_DISTINCT_BETAS:
                    self._betas_seen[beta] += 1

    def record_faults(self, names: list[str]) -> None:
        with self._lock:
            self._faults_injected.update(names)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": {label: dict(statuses) for label, statuses in self._calls.items()},
                "batches_created": dict(self._batches_created),
                "requests_received": self._requests_received,
                "betas_seen": dict(self._betas_seen),
                "faults_injected": dict(self._faults_injected),
            }
