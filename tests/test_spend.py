"""Actual spend: usage metered from raw result bytes whatever the chunking, priced, and emitted."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_batches import _compat
from airflow_provider_batches.spend import Spend, UsageMeter, describe_spend, emit_metrics


def line(custom_id: str, model: str, **usage: int) -> bytes:
    message = {"model": model, "usage": {"input_tokens": 0, "output_tokens": 0, **usage}}
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}).encode()


RESULTS = (
    line("a", "claude-haiku-4-5", input_tokens=1000, output_tokens=200, cache_read_input_tokens=10_000)
    + b"\n"
    + json.dumps({"custom_id": "b", "result": {"type": "expired"}}).encode()
    + b"\n"
    + line("c", "claude-haiku-4-5", input_tokens=500, output_tokens=100, cache_creation_input_tokens=4000)
    + b"\n"
)


#: What RESULTS used, per model and token kind.
RESULTS_TOKENS = {
    "claude-haiku-4-5": {
        "input_tokens": 1500,
        "output_tokens": 300,
        "cache_creation_input_tokens": 4000,
        "cache_read_input_tokens": 10_000,
        "cache_creation_1h_input_tokens": 0,
    }
}


@pytest.mark.parametrize("size", [1, 7, 64, len(RESULTS)])
def test_usage_is_metered_whatever_the_chunk_borders(size: int) -> None:
    meter = UsageMeter()
    chunks = [RESULTS[start : start + size] for start in range(0, len(RESULTS), size)]

    assert b"".join(meter.tap(chunks)) == RESULTS
    assert meter.tokens == RESULTS_TOKENS


def test_cost_prices_cache_writes_and_reads_at_batch_rates() -> None:
    meter = UsageMeter()
    list(meter.tap([RESULTS]))
    spend = Spend()
    spend.add(1, meter)

    report = spend.report(estimate_usd=0.01)

    # haiku: $1 / $5 per MTok, half price in a batch
    expected = (1500 + 4000 * 1.25 + 10_000 * 0.1) * 1.0 / 1e6 * 0.5 + 300 * 5.0 / 1e6 * 0.5
    assert report["cost_usd"] == pytest.approx(expected)
    assert describe_spend(report).startswith(f"estimated at most $0.01, actually ${expected:,.2f}")


def test_metrics_go_to_airflow_stats_tagged_by_dag_and_task(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str, Any, Any]] = []

    class Recorder:
        @staticmethod
        def incr(stat: str, count: int = 1, rate: Any = None, *, tags: Any = None) -> None:
            sent.append(("incr", stat, count, tags))

        @staticmethod
        def gauge(stat: str, value: float, rate: Any = None, delta: Any = None, *, tags: Any = None) -> None:
            sent.append(("gauge", stat, value, tags))

    monkeypatch.setattr(_compat, "Stats", Recorder)
    meter = UsageMeter()
    list(meter.tap([RESULTS]))
    spend = Spend()
    spend.add(1, meter)

    emit_metrics(spend.report(), dag_id="d", task_id="t")

    assert ("incr", "anthropic_batches.output_tokens", 300, {"dag_id": "d", "task_id": "t"}) in sent
    assert ("incr", "anthropic_batches.output_tokens.d.t", 300, None) in sent
    assert any(kind == "gauge" and stat == "anthropic_batches.cost_usd" for kind, stat, _, _ in sent)


def test_airflow_stats_is_importable_on_this_airflow() -> None:
    assert _compat.Stats is not None


class _Sink:
    whole_lines = False

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes | memoryview) -> None:
        self.data += bytes(data)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["block path", "line-by-line path"])
def test_the_results_transfer_meters_usage_from_its_own_decode(newline: bytes) -> None:
    from airflow_provider_batches.transfers.verification import BatchLedger
    from airflow_provider_batches.transfers.writer import TransferProgress, copy_results

    meter, sink = UsageMeter(), _Sink()
    ledger = BatchLedger(batch=SimpleNamespace(id="msgbatch_1"))  # type: ignore[arg-type]  # not finished
    progress = TransferProgress(log=None, interval=1e9)
    copy_results([RESULTS.replace(b"\n", newline)], ledger, lambda _kind: sink, progress, meter)  # type: ignore[arg-type, return-value]

    assert ledger.results == 3
    assert meter.tokens == RESULTS_TOKENS


def test_the_results_transfer_meters_each_model_of_one_block_apart_and_a_null_cache_count_as_zero() -> None:
    from airflow_provider_batches.transfers.verification import BatchLedger
    from airflow_provider_batches.transfers.writer import TransferProgress, copy_results

    null_cache = json.dumps(
        {
            "custom_id": "d",
            "result": {
                "type": "succeeded",
                "message": {
                    "model": "claude-sonnet-4-6",
                    "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": None},
                },
            },
        }
    ).encode()
    block = (
        RESULTS + line("e", "claude-sonnet-4-6", input_tokens=5, output_tokens=1) + b"\n" + null_cache + b"\n"
    )
    meter, sink = UsageMeter(), _Sink()
    ledger = BatchLedger(batch=SimpleNamespace(id="msgbatch_1"))  # type: ignore[arg-type]  # not finished
    progress = TransferProgress(log=None, interval=1e9)
    copy_results([block], ledger, lambda _kind: sink, progress, meter)  # type: ignore[arg-type, return-value]

    assert sink.data == block  # one block: the fast path, written as received
    assert meter.tokens == {
        **RESULTS_TOKENS,
        "claude-sonnet-4-6": {
            "input_tokens": 12,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_1h_input_tokens": 0,
        },
    }


# -- metering in bulk ------------------------------------------------------------------------------

TIERED = "claude-haiku-5-5"  # priced by its prompt: over 100,000 tokens at its long-context tier


def usage_line(custom_id: str, model: str, usage: dict[str, Any] | None) -> bytes:
    message: dict[str, Any] = {"model": model, "content": [{"type": "text", "text": "x"}]}
    if usage is not None:
        message["usage"] = usage
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}).encode()


def by_hand(usages: list[tuple[str, dict[str, Any] | None]]) -> dict[str, dict[str, int]]:
    """What the meter should say, added up one request at a time from the JSON."""
    totals: dict[str, dict[str, int]] = {}
    for model, usage in usages:
        if usage is None:
            continue
        prompt = sum(
            usage.get(name) or 0
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        key = f"{model} (long context)" if model == TIERED and prompt > 100_000 else model
        entry = totals.setdefault(key, dict.fromkeys(RESULTS_TOKENS["claude-haiku-4-5"], 0))
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            entry[name] += usage.get(name) or 0
        entry["cache_creation_1h_input_tokens"] += (usage.get("cache_creation") or {}).get(
            "ephemeral_1h_input_tokens"
        ) or 0
    return totals


def random_usage(rng: random.Random, prompt_max: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": rng.randrange(prompt_max // 2),
        "output_tokens": rng.randrange(500),
    }
    for name in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        usage[name] = rng.choice([None, 0, rng.randrange(prompt_max // 4)])
    if usage["cache_creation_input_tokens"]:
        one_hour = rng.randrange(usage["cache_creation_input_tokens"] + 1)
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage["cache_creation_input_tokens"] - one_hour,
            "ephemeral_1h_input_tokens": rng.choice([one_hour, None]) if one_hour else one_hour,
        }
    return usage


@pytest.mark.parametrize("prompt_max", [1_000, 150_000], ids=["short prompts", "some over the tier"])
@pytest.mark.parametrize("models", [[TIERED], [TIERED, "claude-haiku-4-5"]], ids=["one model", "two models"])
def test_blocks_are_metered_as_their_requests_add_up_one_by_one(prompt_max: int, models: list[str]) -> None:
    rng = random.Random(prompt_max + len(models))
    usages: list[tuple[str, dict[str, Any] | None]] = [
        (rng.choice(models), random_usage(rng, prompt_max)) for _ in range(2_000)
    ]
    usages[3] = (models[0], None)  # a message without usage: its block is metered one by one
    lines = [usage_line(f"r-{index}", model, usage) for index, (model, usage) in enumerate(usages)]
    lines[7:7] = [json.dumps({"custom_id": "e", "result": {"type": "errored", "error": {}}}).encode()]
    data = b"\n".join(lines) + b"\n"
    meter = UsageMeter()

    list(meter.tap([data[start : start + 65_536] for start in range(0, len(data), 65_536)]))

    assert meter.tokens == by_hand(usages)


def test_a_request_over_the_tier_in_a_block_of_short_ones_is_metered_apart() -> None:
    usages: list[tuple[str, dict[str, Any] | None]] = [
        (TIERED, {"input_tokens": 60_000, "output_tokens": 1, "cache_read_input_tokens": 50_000}),
        (TIERED, {"input_tokens": 10, "output_tokens": 2}),
        (TIERED, {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 99_000}),
    ]
    meter = UsageMeter()

    list(meter.tap([b"\n".join(usage_line(str(i), m, u) for i, (m, u) in enumerate(usages)) + b"\n"]))

    assert meter.tokens[f"{TIERED} (long context)"]["output_tokens"] == 1
    assert meter.tokens[TIERED]["output_tokens"] == 5
    assert meter.tokens == by_hand(usages)


def test_one_hour_cache_writes_of_a_line_too_long_to_hold_are_metered() -> None:
    from airflow_provider_batches.transfers.big_lines import BIG_LINE_BYTES
    from airflow_provider_batches.transfers.verification import BatchLedger
    from airflow_provider_batches.transfers.writer import TransferProgress, copy_results

    usage = {
        "input_tokens": 7,
        "output_tokens": 3,
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 40},
    }
    big = usage_line("big", "claude-haiku-4-5", usage).replace(b'"x"', b'"' + b"x" * BIG_LINE_BYTES + b'"')
    data = big + b"\n" + usage_line("small", "claude-haiku-4-5", usage) + b"\n"
    meter, sink = UsageMeter(), _Sink()
    ledger = BatchLedger(batch=SimpleNamespace(id="msgbatch_1"))  # type: ignore[arg-type]  # not finished

    chunks = [data[start : start + 65_536] for start in range(0, len(data), 65_536)]
    copy_results(chunks, ledger, lambda _kind: sink, TransferProgress(None, 1e9), meter)  # type: ignore[arg-type, return-value]

    assert sink.data == data
    assert meter.tokens["claude-haiku-4-5"]["cache_creation_1h_input_tokens"] == 80
    assert meter.tokens == by_hand([("claude-haiku-4-5", usage)] * 2)
