"""A connection's request budget: requests per minute its waits never exceed, within one process.

The API limits requests per minute per organization (50 at the lowest tier). Every wait of a
process on the same API key (the triggerer's pollers, sensors and worker-side waits) draws from
one :class:`RequestBudget`, a token bucket of capacity one: sends are spaced ``60 / rate`` seconds
apart, so no sliding minute holds more than ``rate`` of them. It also reads the API's
``anthropic-ratelimit-requests-*`` headers and a 429's ``retry-after`` to slow down when the
organization (other processes, other tools) spends the rest.

It does no I/O: :func:`budgeted` wraps a plan so each ``Send`` is preceded by the ``Sleep`` the
bucket asks for; the drivers in :mod:`~airflow_provider_batches.client_core` do the sleeping.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import httpx

from airflow_provider_batches.client_core import (
    Plan,
    Send,
    Sleep,
    is_terminal_response,
    server_retry_after,
)
from airflow_provider_batches.client_settings import DEFAULT_MAX_REQUESTS_PER_MINUTE, ClientSettings

__all__ = ["DEFAULT_MAX_REQUESTS_PER_MINUTE", "RequestBudget", "budgeted", "shared_budget"]

T = TypeVar("T")

#: A reset further away than this is not believed (the API's windows are a minute).
MAX_RESET_SECONDS = 60.0
#: A connection's setting counts toward its key's shared rate while it was used this recently, so a
#: raised ``max_requests_per_minute`` applies in a long-running triggerer once the lower one is idle.
RATE_CLAIM_SECONDS = 600.0


class RequestBudget:
    """A token bucket of capacity one, refilled ``requests_per_minute / 60`` times a second.

    Thread-safe, so worker threads and the event loop of one process can share it. Times are the
    caller's monotonic seconds (``now``) and, to read the API's reset timestamps, wall-clock epoch
    seconds (``wall_now``).
    """

    def __init__(self, requests_per_minute: int) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        self.requests_per_minute = requests_per_minute
        self._lock = threading.Lock()
        self._next_slot = -math.inf
        self._hold_until = -math.inf
        self._claims: dict[int, float] = {}  # rate -> when a connection last asked for it

    def claim(self, requests_per_minute: int, now: float) -> None:
        """A connection on this key waits with this rate: the bucket runs at the lowest rate claimed
        within :data:`RATE_CLAIM_SECONDS`."""
        with self._lock:
            self._claims[requests_per_minute] = now
            self._claims = {rate: at for rate, at in self._claims.items() if now - at < RATE_CLAIM_SECONDS}
            self.requests_per_minute = min(self._claims)

    def in_use(self, now: float) -> bool:
        """Whether a connection on this key waited with a rate within :data:`RATE_CLAIM_SECONDS`."""
        with self._lock:
            return any(now - at < RATE_CLAIM_SECONDS for at in self._claims.values())

    @property
    def spacing(self) -> float:
        return 60.0 / self.requests_per_minute

    def reserve(self, now: float) -> float:
        """Take the next send slot: the seconds to wait before sending (0: send now)."""
        with self._lock:
            slot = max(now, self._next_slot, self._hold_until)
            self._next_slot = slot + self.spacing
            return slot - now

    def sent(self, now: float) -> None:
        """A send went out at ``now``: the next slot is a whole spacing after it, so a send that a busy
        event loop made late does not shorten the gap to the next one on the wire."""
        with self._lock:
            self._next_slot = max(self._next_slot, now + self.spacing)

    def observe(self, response: httpx.Response, now: float, wall_now: float) -> None:
        """Slow down on what the API says: a 429 holds sends for its ``retry-after``; a low
        ``anthropic-ratelimit-requests-remaining`` spreads the rest until the window's reset."""
        hold = -math.inf
        if response.status_code == 429 and not is_terminal_response(response):  # a spend cap is no pace
            hold = now + (server_retry_after(response) or 1.0)
        remaining = _int_header(response, "anthropic-ratelimit-requests-remaining")
        reset_at = _time_header(response, "anthropic-ratelimit-requests-reset")
        if remaining is not None and reset_at is not None:
            reset_in = min(max(reset_at - wall_now, 0.0), MAX_RESET_SECONDS)
            hold = max(hold, now + (reset_in if remaining <= 0 else reset_in / (remaining + 1)))
        if hold > -math.inf:
            with self._lock:
                self._hold_until = max(self._hold_until, hold)


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def _time_header(response: httpx.Response, name: str) -> float | None:
    value = response.headers.get(name)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_BUDGETS: dict[tuple[str, str], RequestBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def shared_budget(settings: ClientSettings, *, now: float | None = None) -> RequestBudget | None:
    """This process's budget for the API key and host of ``settings`` (None: unlimited).

    Connections sharing a key share its budget (the API counts per organization); when they set
    different limits, the lowest in use applies (see :meth:`RequestBudget.claim`). Callers ask again
    for each plan or round, which keeps their setting in use. A connection set to 0 sets no limit of
    its own, but shares the key's budget while another connection on the key keeps one in use: the
    API counts the organization's requests, whichever connection sends them.
    """
    rate = settings.max_requests_per_minute
    moment = time.monotonic() if now is None else now
    key = (settings.base_url, hashlib.sha256(settings.api_key.encode("utf-8")).hexdigest()[:16])
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if rate <= 0:
            return budget if budget is not None and budget.in_use(moment) else None
        if budget is None:
            budget = _BUDGETS[key] = RequestBudget(rate)
    budget.claim(rate, moment)
    return budget


def budgeted(
    plan: Plan[T],
    budget: RequestBudget | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Plan[T]:
    """``plan`` with each ``Send`` paced by ``budget`` and each answer shown to it."""
    if budget is None:
        return (yield from plan)
    try:
        effect = next(plan)
        while True:
            if isinstance(effect, Send):
                wait = budget.reserve(clock())
                if wait > 0:
                    yield Sleep(wait)
                budget.sent(clock())
                try:
                    response = yield effect
                except Exception as exc:  # a transport error: the plan decides
                    effect = plan.throw(exc)
                    continue
                budget.observe(response, clock(), wall_clock())
                effect = plan.send(response)
            else:
                yield effect
                effect = plan.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
