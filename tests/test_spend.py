"""Actual spend: usage metered from raw result bytes whatever the chunking, priced, and emitted."""

from __future__ import annotations

import json
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
