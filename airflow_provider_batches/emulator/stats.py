"""Counters that tests read through ``GET /_emulator/stats``: what the client actually did."""

from __future__ import annotations

import re
import threading
from collections import Counter, deque
from typing import Any

MAX_DISTINCT_BETAS = 100
#: Minutes of per-minute counts kept per route (older minutes are dropped).
MINUTES_KEPT = 120
WINDOW_SECONDS = 60.0
ALL_ROUTES = "all"
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
            self._faults_by_route: dict[str, Counter[str]] = {}
            self._started: float | None = None
            self._per_minute: dict[str, dict[int, int]] = {}
            self._windows: dict[str, deque[float]] = {}
            self._max_in_a_minute: Counter[str] = Counter()

    def record_call(self, label: str, status: int, now: float) -> None:
        """One answered /v1/ call at ``now`` (the emulator's clock, as the rate limiter reads it)."""
        with self._lock:
            self._calls.setdefault(label, Counter())[str(status)] += 1
            if self._started is None:
                self._started = now
            minute = int((now - self._started) // 60)
            for key in (label, ALL_ROUTES):
                minutes = self._per_minute.setdefault(key, {})
                minutes[minute] = minutes.get(minute, 0) + 1
                for old in [m for m in minutes if m <= minute - MINUTES_KEPT]:
                    del minutes[old]
                window = self._windows.setdefault(key, deque())
                while window and window[0] <= now - WINDOW_SECONDS:
                    window.popleft()
                window.append(now)
                self._max_in_a_minute[key] = max(self._max_in_a_minute[key], len(window))

    def record_batch(self, key_label: str, request_count: int) -> None:
        with self._lock:
            self._batches_created[key_label] += 1
            self._requests_received += request_count

    def record_betas(self, betas: list[str]) -> None:
        with self._lock:
            for beta in betas:
                if beta in self._betas_seen or len(self._betas_seen) < MAX_DISTINCT_BETAS:
                    self._betas_seen[beta] += 1

    def record_faults(self, names: list[str], label: str | None = None) -> None:
        """Faults injected into one call; ``label`` (its route) also counts them per route."""
        with self._lock:
            self._faults_injected.update(names)
            if label is not None and names:
                self._faults_by_route.setdefault(label, Counter()).update(names)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": {label: dict(statuses) for label, statuses in self._calls.items()},
                "batches_created": dict(self._batches_created),
                "requests_received": self._requests_received,
                "betas_seen": dict(self._betas_seen),
                "faults_injected": dict(self._faults_injected),
                "faults_by_route": {label: dict(names) for label, names in self._faults_by_route.items()},
                "calls_per_minute": {
                    key: {str(minute): count for minute, count in sorted(minutes.items())}
                    for key, minutes in self._per_minute.items()
                },
                "max_calls_in_any_minute": dict(self._max_in_a_minute),
            }
