"""The wait's policy, tested by stepping ``wait_plan``: back-off toward the cap, the deadline, which
failed polls are tolerated and which end the wait. (The trigger and the worker run this same plan.)"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from airflow_provider_batches.policy import WaitEvent, WaitSpec, is_rate_limited
from airflow_provider_batches.waiting import MAX_CONSECUTIVE_ERRORS, Survey, survey_plan, wait_plan
from tests.fakes import batch_json, error
from tests.plans import Answer, PlanRun, settings

FAR = 10**10  # a deadline that never comes
LOG = logging.getLogger(__name__)


def wait(
    *answers: Answer, batch_ids: tuple[str, ...] = ("msgbatch_1",), **options: Any
) -> PlanRun[WaitEvent]:
    """A wait whose polls make no retries of their own (max_retries=0): each answer is one poll."""
    spec = WaitSpec(**{"deadline": FAR, "poll_interval": 1.0, "max_poll_interval": 1.0, **options})
    return PlanRun(wait_plan(settings(max_retries=0), list(batch_ids), spec, log=LOG), *answers)


def in_progress(batch_id: str = "msgbatch_1") -> httpx.Response:
    return httpx.Response(200, json=batch_json(batch_id))


def ended(batch_id: str = "msgbatch_1") -> httpx.Response:
    return httpx.Response(200, json=batch_json(batch_id, status="ended"))


def test_the_poll_interval_backs_off_toward_the_cap() -> None:
    run = wait(
        in_progress(),
        in_progress(),
        in_progress(),
        in_progress(),
        ended(),
        poll_interval=2,
        max_poll_interval=4,
    )

    assert run.result().status == "success"
    assert run.sleeps == pytest.approx([2, 3, 4, 4], abs=0.1)  # less the time each round took


def test_success_carries_the_final_counts_of_every_batch() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        batch_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json=batch_json(batch_id, status="ended", total=3))

    event = wait(answer, batch_ids=("msgbatch_a", "msgbatch_b")).result()

    assert event.status == "success"
    assert {batch_id: counts["succeeded"] for batch_id, counts in event.request_counts.items()} == {
        "msgbatch_a": 3,
        "msgbatch_b": 3,
    }


def test_a_passed_deadline_ends_the_wait_with_a_timeout_naming_the_batch() -> None:
    run = wait(in_progress(), deadline=time.time() - 1)

    event = run.result()

    assert event.status == "timeout"
    assert "msgbatch_1" in event.message
    assert run.sleeps == []


def test_the_wait_never_sleeps_past_the_deadline() -> None:
    run = wait(in_progress(), ended(), deadline=time.time() + 5, poll_interval=60, max_poll_interval=60)

    run.result()

    assert 0 < run.sleeps[0] <= 5


def test_an_authentication_error_ends_the_wait_at_once() -> None:
    run = wait(error(401, "authentication_error", "invalid x-api-key"))

    event = run.result()

    assert event.status == "error"
    assert "authentication_error" in event.message
    assert len(run.requests) == 1
    assert run.sleeps == []


@pytest.mark.parametrize("status", [500, 529, 429, 408])
def test_transient_errors_are_tolerated(status: int) -> None:
    run = wait(error(status, "api_error"), error(status, "api_error"), ended())

    assert run.result().status == "success"
    assert len(run.sleeps) == 2


def test_a_network_error_is_tolerated() -> None:
    run = wait(httpx.ConnectError("refused"), ended())

    assert run.result().status == "success"
    assert len(run.requests) == 2


def test_transient_errors_end_the_wait_after_too_many_rounds_in_a_row() -> None:
    run = wait(error(503, "api_error"))

    event = run.result()

    assert event.status == "error"
    assert f"polling failed {MAX_CONSECUTIVE_ERRORS} rounds in a row" in event.message
    assert len(run.requests) == MAX_CONSECUTIVE_ERRORS


def test_a_not_found_right_after_create_is_tolerated() -> None:
    run = wait(error(404, "not_found_error"), ended(), not_found_grace_until=time.time() + 60)

    assert run.result().status == "success"
    assert len(run.requests) == 2


def test_a_not_found_after_the_grace_window_ends_the_wait() -> None:
    run = wait(error(404, "not_found_error"), not_found_grace_until=time.time() - 1)

    event = run.result()

    assert event.status == "error"
    assert "not_found_error" in event.message
    assert len(run.requests) == 1


def test_ended_batches_are_not_polled_again() -> None:
    answers = {
        "msgbatch_a": [ended("msgbatch_a")],
        "msgbatch_b": [in_progress("msgbatch_b"), ended("msgbatch_b")],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        script = answers[request.url.path.rsplit("/", 1)[-1]]
        return script.pop(0) if len(script) > 1 else script[0]

    run = wait(answer, batch_ids=("msgbatch_a", "msgbatch_b"))

    assert run.result().status == "success"
    assert [request.url.path.rsplit("/", 1)[-1] for request in run.requests] == [
        "msgbatch_a",
        "msgbatch_b",
        "msgbatch_b",
    ]


def test_rate_limited_polls_never_count_toward_failing_the_wait() -> None:
    limited = error(429, "rate_limit_error", **{"x-should-retry": "false"})
    run = wait(*[limited] * (MAX_CONSECUTIVE_ERRORS + 10), ended())

    assert run.result().status == "success"
    assert len(run.requests) == MAX_CONSECUTIVE_ERRORS + 11


# -- the coalesced poller's round: listing pages first, a GET only beyond their reach --------------


def page(*batches: dict[str, Any], has_more: bool = False) -> httpx.Response:
    ids = [batch["id"] for batch in batches]
    return httpx.Response(
        200,
        json={
            "data": list(batches),
            "has_more": has_more,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        },
    )


def survey(
    listed: dict[str, datetime | None], *answers: Answer, direct: tuple[str, ...] = ()
) -> PlanRun[Survey]:
    return PlanRun(survey_plan(settings(max_retries=0), listed, direct), *answers)


def called(run: PlanRun[Any]) -> list[str]:
    """Each request as ``list`` (with its cursor) or the id it fetched."""
    return [
        f"list after {request.url.params.get('after_id')}"
        if request.url.path == "/v1/messages/batches"
        else request.url.path.rsplit("/", 1)[-1]
        for request in run.requests
    ]


def test_one_listing_page_reports_every_batch_it_holds() -> None:
    run = survey(
        dict.fromkeys(["b1", "b2", "b3"]),
        page(batch_json("b3", status="ended"), batch_json("b2"), batch_json("b1")),
    )

    result = run.result()

    assert called(run) == ["list after None"]
    assert result.outcomes["b3"].is_ended  # type: ignore[union-attr]
    assert set(result.outcomes) == {"b1", "b2", "b3"}
    assert run.requests[0].url.params["limit"] == "1000"


def test_a_batch_the_listing_does_not_hold_is_fetched_on_its_own() -> None:
    run = survey(dict.fromkeys(["b1", "b2", "gone"]), page(batch_json("b2"), batch_json("b1")), OK_GONE)

    result = run.result()

    assert called(run) == ["list after None", "gone"]
    assert result.unreached == frozenset({"gone"})


def test_paging_stops_once_the_listing_is_older_than_every_unseen_batch() -> None:
    newer = datetime(2026, 11, 22, 11, tzinfo=timezone.utc)  # batch_json's batches are from 10:00
    run = survey(dict.fromkeys(["w1", "w2", "w3"], newer), page(batch_json("x1"), has_more=True), OK_GONE)

    run.result()

    assert called(run) == ["list after None", "w1", "w2", "w3"]


def test_pages_are_read_while_more_batches_are_unseen_than_pages_were_read() -> None:
    elsewhere = page(batch_json("other"), has_more=True)
    run = survey(dict.fromkeys(["b1", "b2", "b3"]), elsewhere, elsewhere, elsewhere, in_progress())

    run.result()

    assert called(run) == ["list after None", "list after other", "list after other", "b1", "b2", "b3"]


def test_a_single_batch_is_fetched_without_a_listing() -> None:
    run = survey({"b1": None}, in_progress())
    run.result()
    assert called(run) == ["b1"]


def test_batches_beyond_the_listing_are_fetched_directly() -> None:
    listing = page(batch_json("b1"), batch_json("b2"))
    run = survey(dict.fromkeys(["b1", "b2"]), listing, in_progress(), direct=("old",))
    run.result()
    assert called(run) == ["list after None", "old"]


def test_a_failed_listing_page_is_each_unseen_batch_failure_without_more_requests() -> None:
    run = survey(dict.fromkeys(["b1", "b2"]), error(429, "rate_limit_error"))

    result = run.result()

    assert called(run) == ["list after None"]
    assert all(is_rate_limited(outcome) for outcome in result.outcomes.values())  # type: ignore[arg-type]


OK_GONE = error(404, "not_found_error")
