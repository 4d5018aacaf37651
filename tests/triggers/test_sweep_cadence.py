"""The shared poller's cadence at the real defaults: a sweep every 10 s while anything is pending,
listing only the pages that cover the oldest pending batch, within the connection's budget, slowed
by the API's 429s. Stepped on a simulated clock against a simulated API (no sleeps): the plans and
the budget are the poller's own (``survey_plan`` paced by ``budgeted``, the next sweep at
``started + sweep_gap(...)``, as ``ConnectionPoller._round`` does)."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from airflow_provider_batches.budget import RequestBudget, budgeted
from airflow_provider_batches.client_core import Plan, Send, Sleep
from airflow_provider_batches.client_settings import DEFAULT_MAX_REQUESTS_PER_MINUTE
from airflow_provider_batches.policy import (
    DEFAULT_POLL_INTERVAL,
    SWEEP_BUDGET_SHARE,
    SWEEP_INTERVAL,
    sweep_gap,
)
from airflow_provider_batches.waiting import Survey, survey_plan
from tests.fakes import batch_json
from tests.plans import settings

EPOCH = 1_800_000_000.0  # the simulated clock's zero, as wall-clock seconds
TIER_RPM = 50  # the lowest tier's limit, across the batch endpoints
REQUEST_SECONDS = 0.05  # what one request takes on the simulated wire


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(EPOCH + moment, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class SimulatedAPI:
    """Batches created at given moments (newest first in the listing), each ending at its own moment;
    a tier limit of ``rpm`` requests in any sliding minute, answered 429 with ``retry-after`` beyond."""

    created: dict[str, float]
    ends: dict[str, float]
    rpm: int = TIER_RPM
    now: float = 0.0
    sent: list[float] = field(default_factory=list)
    refused: int = 0
    window: deque[float] = field(default_factory=deque)

    def batch(self, batch_id: str) -> dict[str, Any]:
        ended = self.now >= self.ends[batch_id]
        return batch_json(
            batch_id, status="ended" if ended else "in_progress", created_at=rfc3339(self.created[batch_id])
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(self.now)
        while self.window and self.window[0] <= self.now - 60:
            self.window.popleft()
        if len(self.window) >= self.rpm:
            self.refused += 1
            retry_after = self.window[0] + 60 - self.now
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
            return httpx.Response(429, json=body, headers={"retry-after": f"{retry_after:.0f}"})
        self.window.append(self.now)
        if request.url.path == "/v1/messages/batches":
            query = parse_qs(request.url.query.decode())
            limit = int(query["limit"][0])
            order = sorted(self.created, key=lambda batch_id: -self.created[batch_id])
            start = order.index(query["after_id"][0]) + 1 if "after_id" in query else 0
            ids = order[start : start + limit]
            return httpx.Response(
                200,
                json={
                    "data": [self.batch(batch_id) for batch_id in ids],
                    "has_more": start + limit < len(order),
                    "first_id": ids[0] if ids else None,
                    "last_id": ids[-1] if ids else None,
                },
            )
        return httpx.Response(200, json=self.batch(request.url.path.rsplit("/", 1)[-1]))

    def run(self, plan: Plan[Survey]) -> Survey:
        """Drive ``plan`` on the simulated clock: a ``Sleep`` moves it, a request takes a moment."""
        try:
            effect = next(plan)
            while True:
                if isinstance(effect, Sleep):
                    self.now += effect.seconds
                    effect = plan.send(None)
                    continue
                assert isinstance(effect, Send)
                response = self(effect.request)
                response.request = effect.request
                self.now += REQUEST_SECONDS
                effect = plan.send(response)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def most_in_a_minute(self, start: float = 0.0) -> int:
        times = [moment for moment in self.sent if moment >= start]
        return max((sum(1 for t in times if s <= t < s + 60) for s in times), default=0)


@dataclass
class Sweeps:
    """What the poller saw: when each batch was first seen ended, and when each sweep started."""

    seen_ended: dict[str, float] = field(default_factory=dict)
    started: list[float] = field(default_factory=list)


def sweep_until_all_ended(
    api: SimulatedAPI,
    *,
    budget_rpm: int = DEFAULT_MAX_REQUESTS_PER_MINUTE,
    wanted: float = DEFAULT_POLL_INTERVAL,
    until: float = 3600.0,
) -> Sweeps:
    """The poller's loop: sweep the pending batches (dates learned from earlier sweeps), then the next
    sweep ``sweep_gap`` after this one began; a batch leaves once seen ended."""
    budget = RequestBudget(budget_rpm)
    pending: dict[str, datetime | None] = dict.fromkeys(ours(api))
    sweeps = Sweeps()
    while pending and api.now < until:
        started = api.now
        sweeps.started.append(started)
        plan = survey_plan(settings(), dict(pending))
        paced = budgeted(plan, budget, clock=lambda: api.now, wall_clock=lambda: EPOCH + api.now)
        survey = api.run(paced)
        for batch_id, outcome in survey.outcomes.items():
            if isinstance(outcome, Exception):
                continue
            if outcome.is_ended:
                sweeps.seen_ended[batch_id] = api.now
                del pending[batch_id]
            else:
                pending[batch_id] = outcome.created_at
        next_sweep = started + sweep_gap(wanted=wanted, cost=survey.requests, requests_per_minute=budget_rpm)
        api.now = max(api.now, next_sweep)
    return sweeps


def waiting_batches(count: int, *, ending_between: tuple[float, float], seed: int = 7) -> SimulatedAPI:
    """``count`` batches created one a second before the sweeps start, ending at random moments
    (not in creation order), beside 300 older batches of the organization."""
    chance = random.Random(seed)
    created = {f"msgbatch_{n:05d}": -count + n for n in range(count)}
    ends = {batch_id: chance.uniform(*ending_between) for batch_id in created}
    for n in range(300):
        created[f"msgbatch_old{n:03d}"] = -10 * count - n
        ends[f"msgbatch_old{n:03d}"] = -1.0
    return SimulatedAPI(created, ends)


def ours(api: SimulatedAPI) -> list[str]:
    return [batch_id for batch_id in api.created if "old" not in batch_id]


# -- the gap between sweeps --------------------------------------------------------------------------


def test_a_cheap_sweep_comes_every_sweep_interval_whatever_the_waits_poll_interval() -> None:
    assert sweep_gap(wanted=DEFAULT_POLL_INTERVAL, cost=1, requests_per_minute=40) == SWEEP_INTERVAL
    assert sweep_gap(wanted=600.0, cost=5, requests_per_minute=40) == SWEEP_INTERVAL


def test_a_wait_asking_for_a_shorter_interval_gets_it_within_the_budget() -> None:
    assert sweep_gap(wanted=3.0, cost=1, requests_per_minute=40) == 3.0
    assert sweep_gap(wanted=0.5, cost=1, requests_per_minute=40) == 60 / (SWEEP_BUDGET_SHARE * 40)


def test_costly_sweeps_are_spread_to_spend_only_their_share_of_the_budget() -> None:
    gap = sweep_gap(wanted=SWEEP_INTERVAL, cost=20, requests_per_minute=40)  # 20,000 batches
    assert 20 * 60 / gap == pytest.approx(SWEEP_BUDGET_SHARE * 40)


def test_without_a_budget_sweeps_are_never_stretched() -> None:
    assert sweep_gap(wanted=SWEEP_INTERVAL, cost=50, requests_per_minute=0) == SWEEP_INTERVAL


# -- a sweep's pages ---------------------------------------------------------------------------------


def test_a_sweep_stops_after_the_page_covering_the_oldest_pending_batch() -> None:
    ids = [f"msgbatch_{n}" for n in range(30)]
    api = SimulatedAPI(
        created={batch_id: float(n) for n, batch_id in enumerate(ids)}, ends=dict.fromkeys(ids, 1e9)
    )
    # Newest first, pages of 10: 29..20, 19..10, 9..0. The oldest pending batch is 15: page 2 covers it.
    pending = {f"msgbatch_{n}": datetime.fromtimestamp(EPOCH + n, tz=timezone.utc) for n in (28, 21, 17, 15)}

    survey = api.run(survey_plan(settings(), pending, page_size=10))

    assert len(api.sent) == survey.requests == 2
    assert set(survey.outcomes) == set(pending)
    assert not survey.unreached


def test_the_first_sweep_reads_pages_until_every_pending_batch_is_seen() -> None:
    api = waiting_batches(2500, ending_between=(1e6, 1e7))
    pending: dict[str, datetime | None] = dict.fromkeys(ours(api))

    survey = api.run(survey_plan(settings(), pending))

    assert survey.requests == len(api.sent) == 3  # 2,500 batches: three pages of 1,000, no GET
    assert all(not isinstance(outcome, Exception) for outcome in survey.outcomes.values())


# -- the cadence over time ---------------------------------------------------------------------------


def test_5000_pending_batches_stay_within_the_budget_and_the_tier_with_no_429() -> None:
    api = waiting_batches(5000, ending_between=(60.0, 240.0))

    sweeps = sweep_until_all_ended(api)

    assert len(sweeps.seen_ended) == 5000
    assert api.refused == 0
    most = api.most_in_a_minute()
    assert (
        most <= SWEEP_BUDGET_SHARE * DEFAULT_MAX_REQUESTS_PER_MINUTE + 1
    )  # the sweeps' share, one step of rounding
    minutes = api.now / 60
    assert len(api.sent) / minutes / 5 <= 10  # requests a minute per 1,000 batches


def test_1000_pending_batches_cost_a_page_a_sweep_and_are_seen_ended_within_the_sweep_interval() -> None:
    api = waiting_batches(1000, ending_between=(60.0, 600.0))

    sweeps = sweep_until_all_ended(api)

    latencies = sorted(sweeps.seen_ended[b] - api.ends[b] for b in sweeps.seen_ended)
    assert len(latencies) == 1000
    assert api.refused == 0
    assert latencies[len(latencies) // 2] <= SWEEP_INTERVAL / 2 + 1 <= 10  # ends fall anywhere between sweeps
    assert latencies[-1] <= SWEEP_INTERVAL + 1 <= 30  # the next sweep, and the page it takes
    assert len(api.sent) / (api.now / 60) <= 6.5  # one page every 10 s


def test_a_batch_ending_just_after_a_sweep_is_seen_at_the_next_one() -> None:
    api = waiting_batches(1000, ending_between=(1e6, 1e7))
    late = "msgbatch_00000"  # the oldest: on the last page a sweep reads
    api.ends[late] = 10.5  # the second sweep (at 10 s) has read it by then

    sweeps = sweep_until_all_ended(api, until=40.0)

    assert sweeps.started[:4] == pytest.approx([0.0, 10.0, 20.0, 30.0])
    assert sweeps.seen_ended[late] - api.ends[late] <= SWEEP_INTERVAL


def test_a_429_holds_the_sweeps_for_its_retry_after() -> None:
    api = waiting_batches(1000, ending_between=(1e6, 1e7))
    api.window.extend([-40.0 + n * 0.01 for n in range(TIER_RPM)])  # another client spent the minute at -40

    sweeps = sweep_until_all_ended(api, until=60.0)

    first_refusal, next_send = api.sent[0], api.sent[1]
    assert next_send - first_refusal >= 20.0  # retry-after: the window frees 20 s later
    assert api.refused == 1  # once held, never refused again
    assert sweeps.started[1] >= next_send  # the next sweep does not come sooner than the hold allows
    assert api.most_in_a_minute() <= TIER_RPM
