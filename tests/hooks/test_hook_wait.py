"""The wait in the worker is the hook's (``AnthropicHook.wait_for_batches``), over real sockets against
the emulator: it polls until every batch has ended, gives up at the deadline, ends at once on a
failure that waiting will not cure, and its old home in ``waiting`` (a module that does no I/O)
only forwards to it, with a DeprecationWarning."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from airflow_provider_batches import waiting
from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchTimeoutError, BatchWaitError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.policy import WaitSpec
from airflow_provider_batches.testing import CONNECTION_ENV_VAR, connection_json
from tests.operators.support import requests

QUICK = {"poll_interval": 0.01, "max_poll_interval": 0.01}


@pytest.fixture
def emulator(anthropic_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, reached by a connection without a request budget: these tests are about the wait,
    tests/triggers/test_one_budget.py about its pace."""
    conn = {**json.loads(connection_json(anthropic_emulator)), "extra": {"max_requests_per_minute": 0}}
    monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(conn))
    return anthropic_emulator


def polls(emulator: Emulator) -> int:
    return sum(emulator.admin.stats()["calls"].get("GET /v1/messages/batches/{id}", {}).values())


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the awaited state never came"
        time.sleep(0.01)


def test_the_hook_waits_until_every_batch_has_ended_and_returns_their_final_counts(
    emulator: Emulator,
) -> None:
    emulator.admin.set_config(processing_seconds=600)
    hook = AnthropicHook()
    batch_ids = [hook.create_batch(requests(2)).id, hook.create_batch(requests(3)).id]
    spec = WaitSpec(time.time() + 60, **QUICK)
    outcome: dict[str, dict[str, dict[str, int]]] = {}
    waiter = threading.Thread(target=lambda: outcome.update(counts=hook.wait_for_batches(batch_ids, spec)))

    waiter.start()
    until(lambda: polls(emulator) >= 4)  # two rounds went by with nothing ended
    assert waiter.is_alive()
    emulator.clock.advance(600)  # the batches end
    waiter.join(20)

    assert not waiter.is_alive()
    assert {batch_id: counts["succeeded"] for batch_id, counts in outcome["counts"].items()} == {
        batch_ids[0]: 2,
        batch_ids[1]: 3,
    }


def test_the_hooks_wait_raises_batch_timeout_error_at_the_deadline(emulator: Emulator) -> None:
    emulator.admin.set_config(processing_seconds=600)
    hook = AnthropicHook()
    batch_id = hook.create_batch(requests(1)).id

    with pytest.raises(BatchTimeoutError, match=f"{batch_id} had not ended by the deadline"):
        hook.wait_for_batches([batch_id], WaitSpec(time.time() + 0.3, **QUICK))


def test_the_hooks_wait_ends_at_once_on_a_batch_that_does_not_exist(emulator: Emulator) -> None:
    with pytest.raises(BatchWaitError, match="msgbatch_missing.*not_found_error"):
        AnthropicHook().wait_for_batches(["msgbatch_missing"], WaitSpec(time.time() + 60, **QUICK))

    assert polls(emulator) == 1


def test_waiting_wait_for_batches_warns_and_forwards_to_the_hook(emulator: Emulator) -> None:
    hook = AnthropicHook()
    batch_id = hook.create_batch(requests(2)).id  # instant lifecycle: ended at once

    with pytest.warns(DeprecationWarning, match=r"AnthropicHook\.wait_for_batches"):
        counts = waiting.wait_for_batches(hook, [batch_id], WaitSpec(time.time() + 60, **QUICK), log=hook.log)

    assert counts[batch_id]["succeeded"] == 2
