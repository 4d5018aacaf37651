"""Step a plan by hand: answer its requests from a script and record its sleeps (no sockets, no clock).

A plan (``client_core``, ``waiting``) is a generator of ``Send``/``Sleep`` effects, so its policy
(retries, back-off, deadlines, what counts as transient) is tested by stepping it, instead of by
patching ``time.sleep``/``asyncio.sleep`` under a real driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx

from airflow_provider_batches.client_core import ClientSettings, Plan, Send, Sleep
from tests.fakes import API_KEY, BASE_URL

T = TypeVar("T")
Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def settings(**changes: Any) -> ClientSettings:
    """Client settings for stepped plans: the test API, the usual defaults."""
    return ClientSettings(api_key=API_KEY, base_url=BASE_URL, **changes)


class PlanRun(Generic[T]):
    """Runs ``plan`` to its end. Each ``Send`` takes the next answer (the last one repeats): a response
    is sent in, an exception thrown in (as the driver does with a transport error). Each ``Sleep`` is
    recorded in :attr:`sleeps` and returns at once."""

    def __init__(self, plan: Plan[T], *answers: Answer) -> None:
        assert answers, "script at least one answer"
        self.plan = plan
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def result(self) -> T:
        """The plan's return value; the exception it ends with propagates (the steps stay recorded)."""
        try:
            effect = self.plan.send(None)
            while True:
                if isinstance(effect, Sleep):
                    self.sleeps.append(effect.seconds)
                    effect = self.plan.send(None)
                    continue
                assert isinstance(effect, Send), effect
                answer = self._answer(effect.request)
                effect = self.plan.throw(answer) if isinstance(answer, Exception) else self.plan.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _answer(self, request: httpx.Request) -> httpx.Response | Exception:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            return answer
        response = answer(request) if callable(answer) else answer
        response.request = request
        return response
