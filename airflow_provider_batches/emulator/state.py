"""Everything one running emulator holds, shared by the middleware, the API handlers and the admin routes."""

from __future__ import annotations

import threading
from typing import Any

from airflow_provider_batches.emulator.clock import Clock, SystemClock
from airflow_provider_batches.emulator.config import EmulatorConfig, mask_key
from airflow_provider_batches.emulator.faults import FaultInjector, RateLimiter
from airflow_provider_batches.emulator.stats import Stats
from airflow_provider_batches.emulator.store import BatchStore


class EmulatorState:
    """Config (replaceable at run time), clock, batch store, fault machinery and stats."""

    def __init__(self, config: EmulatorConfig, clock: Clock | None = None) -> None:
        self.initial_config = config.model_copy(deep=True)
        self.config = config.model_copy(deep=True)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.store = BatchStore(config.data_dir)
        self.faults = FaultInjector(config.seed)
        self.rate_limiter = RateLimiter()
        self.stats = Stats()
        self._lock = threading.Lock()

    def is_accepted_key(self, api_key: str) -> bool:
        return api_key in self.config.api_keys

    @staticmethod
    def key_label(api_key: str) -> str:
        return mask_key(api_key)

    def patch_config(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Apply a partial config (raises ValueError/ValidationError); a new seed restarts the RNG."""
        with self._lock:
            self.config = self.config.patched(changes)
            if "seed" in changes:
                self.faults.reseed(self.config.seed)
            return self.config

    def reset(self, *, batches: bool) -> None:
        """Back to the start: initial config, fresh RNG, empty stats and rate windows (and batches)."""
        with self._lock:
            self.config = self.initial_config.model_copy(deep=True)
            self.faults.reseed(self.config.seed)
            self.rate_limiter.reset()
            self.stats.reset()
        if batches:
            self.store.clear()

    def close(self) -> None:
        self.store.close()
