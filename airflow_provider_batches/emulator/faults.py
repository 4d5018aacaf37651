"""Rate limits and injected faults, decided by a seeded RNG so a failing test can be replayed.

Every /v1/ call draws exactly three numbers (failure, slowness, results cut), whatever the config,
so the same seed and the same sequence of calls give the same faults. Scripted faults
(``next_faults``) are consumed first, one per call, in order.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from airflow_provider_batches.emulator.config import EmulatorConfig

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class TerminalFault:
    """An answer no retry can change (a spend limit, billing, permission, an organization on hold),
    as the API gives it: status, error type, message, and ``error.details`` when the API sends one."""

    status: int
    error_type: str
    message: str
    error_code: str | None = None


#: The terminal answers ``next_faults`` can script, by name. None of them carries ``retry-after``.
TERMINAL_FAULTS: dict[str, TerminalFault] = {
    "spend_limit": TerminalFault(
        429,
        "rate_limit_error",
        "Your organization has reached its monthly API spend limit for its usage tier.",
        "enforced_spend_limit_reached",
    ),
    "usage_limit": TerminalFault(
        400,
        "invalid_request_error",
        "You have reached your specified API usage limits. "
        "You will regain access on 2027-01-01 at 00:00 UTC.",
    ),
    "billing": TerminalFault(
        402, "billing_error", "Your credit balance is too low to access the Anthropic API."
    ),
    "permission": TerminalFault(
        403, "permission_error", "Your API key does not have permission to use this resource."
    ),
    "on_hold": TerminalFault(
        400,
        "invalid_request_error",
        "This organization has been disabled.",
        "organization_on_hold",
    ),
}


@dataclass(frozen=True)
class RateVerdict:
    """Outcome of a rate-limit check, with what the ``anthropic-ratelimit-requests-*`` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after_seconds: int


class RateLimiter:
    """Requests per minute per (API key, bucket), over a sliding one-minute window."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], deque[float]] = {}

    def reset(self) -> None:
        self._windows.clear()

    def check(self, owner: str, bucket: str, limit: int, now: float) -> RateVerdict:
        window = self._windows.setdefault((owner, bucket), deque())
        while window and window[0] <= now - WINDOW_SECONDS:
            window.popleft()
        while len(window) > limit:  # the limit was lowered at run time: keep memory bounded
            window.popleft()
        if len(window) >= limit:
            reset_at = window[0] + WINDOW_SECONDS
            retry_after = max(1, math.ceil(reset_at - now))
            return RateVerdict(False, limit, 0, reset_at, retry_after)
        window.append(now)
        reset_at = window[0] + WINDOW_SECONDS
        return RateVerdict(True, limit, limit - len(window), reset_at, 0)


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one /v1/ call. ``status`` is 500, 504 or 529; ``rate_limited`` forces a 429."""

    status: int | None = None
    rate_limited: bool = False
    drop: bool = False
    #: The server performs the call, then loses its answer: ``"drop"`` (connection closed) or ``"500"``.
    lose_answer: str | None = None
    slow_seconds: float = 0.0
    cut_after_bytes: int | None = None
    #: A terminal answer (see ``TERMINAL_FAULTS``), by name.
    terminal: str | None = None

    @property
    def names(self) -> list[str]:
        """The faults in this decision, as counted in stats."""
        found = [str(self.status)] if self.status else []
        found += ["429"] if self.rate_limited else []
        found += ["drop"] if self.drop else []
        found += [f"{self.lose_answer}_after"] if self.lose_answer else []
        found += ["slow"] if self.slow_seconds > 0 else []
        found += ["cut"] if self.cut_after_bytes is not None else []
        found += [self.terminal] if self.terminal else []
        return found


class FaultInjector:
    """Turns the fault settings into per-call decisions."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def decide(
        self, config: EmulatorConfig, *, is_results_download: bool, is_create: bool = False
    ) -> FaultDecision:
        failure_draw, slow_draw, cut_draw = self._rng.random(), self._rng.random(), self._rng.random()
        scripted = _take_scripted(config.next_faults, is_results_download)
        if scripted is None and is_create and config.create_faults:
            scripted = config.create_faults.pop(0)
        if scripted is not None:
            return _scripted_decision(scripted, config)
        if is_create and failure_draw < config.create_drop_fraction + config.create_drop_after_fraction:
            if failure_draw < config.create_drop_fraction:
                return FaultDecision(drop=True)
            return FaultDecision(lose_answer="drop")
        status: int | None = None
        drop = False
        lose_answer: str | None = None
        threshold = 0.0
        for outcome, fraction in (
            ("drop", config.drop_fraction),
            (529, config.overloaded_fraction),
            (500, config.api_error_fraction),
            (504, config.timeout_fraction),
            ("drop_after", config.drop_after_fraction),
        ):
            threshold += fraction
            if failure_draw < threshold:
                drop = outcome == "drop"
                lose_answer = "drop" if outcome == "drop_after" else None
                status = outcome if isinstance(outcome, int) else None
                break
        slow = config.slow_seconds if config.slow_seconds > 0 and slow_draw < config.slow_fraction else 0.0
        cut: int | None = None
        if is_results_download and config.cut_results_after_bytes is not None:
            cut = config.cut_results_after_bytes if cut_draw < config.cut_results_fraction else None
        return FaultDecision(
            status=status, drop=drop, lose_answer=lose_answer, slow_seconds=slow, cut_after_bytes=cut
        )


def _take_scripted(queue: list[str], is_results_download: bool) -> str | None:
    """Pop the first scripted fault that applies to this call (``cut`` waits for a results download)."""
    for position, name in enumerate(queue):
        if name != "cut" or is_results_download:
            return queue.pop(position)
    return None


def _scripted_decision(name: str, config: EmulatorConfig) -> FaultDecision:
    if name == "ok":
        return FaultDecision()
    if name == "429":
        return FaultDecision(rate_limited=True)
    if name == "drop":
        return FaultDecision(drop=True)
    if name.endswith("_after"):
        return FaultDecision(lose_answer=name.removesuffix("_after"))
    if name == "slow":
        return FaultDecision(slow_seconds=config.slow_seconds or 1.0)
    if name in TERMINAL_FAULTS:
        return FaultDecision(terminal=name)
    if name == "cut":
        return FaultDecision(cut_after_bytes=config.cut_results_after_bytes or 0)
    return FaultDecision(status=int(name))
