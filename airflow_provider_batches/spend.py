"""What a job actually cost: the ``usage`` of every result, added up per model and per round, priced.

:class:`UsageMeter` taps a results byte stream (one batch, one download attempt) and adds up the
four token counts of each succeeded result per model; :class:`Spend` gathers the meters of a job
(by round), prices them with :mod:`~airflow_provider_batches.pricing` at batch rates (the same table
as the token-count estimate; an unpriced model is reported, never guessed), and reports them for
the manifest, the task log and Airflow's metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import msgspec

from airflow_provider_batches.pricing import BATCH_DISCOUNT, price_for, usage_cost_usd

TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
#: Prefix of the metrics sent through Airflow's ``Stats``.
METRIC_PREFIX = "anthropic_batches"
_USAGE_GETTERS = [(name, attrgetter(name)) for name in TOKEN_FIELDS]


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0


class ResultMessage(msgspec.Struct):
    """The metered fields of a succeeded result's message (the transfer decodes them with its checks)."""

    model: str = ""
    usage: _Usage | None = None


class _Result(msgspec.Struct):
    type: str = ""
    message: ResultMessage | None = None


class _Line(msgspec.Struct):
    result: _Result | None = None


_decode_block = msgspec.json.Decoder(list[_Line]).decode
_decode_line = msgspec.json.Decoder(_Line).decode


@dataclass
class UsageMeter:
    """Token counts per model of the results of one download attempt of one batch."""

    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    _carry: bytes = b""

    def tap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks, unchanged, metered on the way."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk
        self.close()

    def feed(self, chunk: bytes) -> None:
        last = chunk.rfind(b"\n")
        if last < 0:
            self._carry += chunk
            return
        block = self._carry + chunk[: last + 1] if self._carry else chunk[: last + 1]
        self._carry = chunk[last + 1 :]
        self._add_block(block)

    def close(self) -> None:
        if self._carry.strip():
            self.add_line(self._carry)
        self._carry = b""

    def _add_block(self, block: bytes) -> None:
        if b"\r" not in block and b"\n\n" not in block and not block.startswith(b"\n"):
            try:
                for line in _decode_block(b"[" + block[:-1].replace(b"\n", b",") + b"]"):
                    self._add(line)
                return
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass  # the transfer's own checks name a bad line; here each good line still counts
        for raw in block.split(b"\n"):
            if raw.strip():
                self.add_line(raw)

    def add_line(self, raw: bytes | memoryview) -> None:
        """One raw result line (a line that is not a result, or has no usage, adds nothing)."""
        try:
            self._add(_decode_line(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return

    def add_messages(self, messages: Iterable[ResultMessage | None]) -> None:
        """Messages already decoded by the transfer's own pass over the lines (one decode, not two).

        Runs once per block of result lines: the transfer's hot path, hence sums over ``map``
        (C loops) per model instead of a Python loop per message."""
        metered = [message for message in messages if message is not None and message.usage is not None]
        if not metered:
            return
        models = {message.model for message in metered}
        groups = (
            [metered]
            if len(models) == 1
            else [[message for message in metered if message.model == model] for model in models]
        )
        for group in groups:
            usages = [message.usage for message in group]
            totals = self.tokens.get(group[0].model)
            if totals is None:
                totals = self.tokens[group[0].model] = dict.fromkeys(TOKEN_FIELDS, 0)
            for name, getter in _USAGE_GETTERS:
                totals[name] += sum(filter(None, map(getter, usages)))  # None (no cache use) adds 0

    def _add(self, line: _Line) -> None:
        if line.result is not None:
            self.add_messages([line.result.message])


def _add_tokens(into: dict[str, int], tokens: Mapping[str, int]) -> None:
    for name in TOKEN_FIELDS:
        into[name] = into.get(name, 0) + tokens.get(name, 0)


@dataclass
class Spend:
    """A job's metered usage by round and model, priced at batch rates."""

    prices: Mapping[str, Mapping[str, float]] | None = None
    by_round: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)

    def add(self, round_number: int, meter: UsageMeter) -> None:
        models = self.by_round.setdefault(round_number, {})
        for model, tokens in meter.tokens.items():
            _add_tokens(models.setdefault(model, {}), tokens)

    def _cost(self, model: str, tokens: Mapping[str, int]) -> float | None:
        price = price_for(model, self.prices)
        return (
            None
            if price is None
            else usage_cost_usd(price, **{name: tokens.get(name, 0) for name in TOKEN_FIELDS})
        )

    def report(self, estimate_usd: float | None = None) -> dict[str, Any]:
        """The manifest's ``spend``: tokens and USD per model, per round, and in all."""
        per_model: dict[str, dict[str, Any]] = {}
        per_round: dict[str, dict[str, Any]] = {}
        unpriced: set[str] = set()
        total_cost = 0.0
        total_tokens: dict[str, int] = dict.fromkeys(TOKEN_FIELDS, 0)
        for number, models in sorted(self.by_round.items()):
            round_tokens: dict[str, int] = dict.fromkeys(TOKEN_FIELDS, 0)
            round_cost = 0.0
            for model, tokens in models.items():
                _add_tokens(round_tokens, tokens)
                _add_tokens(per_model.setdefault(model, {}), tokens)
                cost = self._cost(model, tokens)
                if cost is None:
                    unpriced.add(model)
                else:
                    round_cost += cost
            _add_tokens(total_tokens, round_tokens)
            total_cost += round_cost
            per_round[str(number)] = {**round_tokens, "cost_usd": round(round_cost, 6)}
        for model, tokens in per_model.items():
            cost = self._cost(model, tokens)
            tokens["cost_usd"] = None if cost is None else round(cost, 6)  # type: ignore[assignment]
        return {
            **total_tokens,
            "cost_usd": round(total_cost, 6),
            "complete": not unpriced,
            "unpriced_models": sorted(unpriced),
            "per_model": dict(sorted(per_model.items())),
            "per_round": per_round,
            "batch_discount": BATCH_DISCOUNT,
            "estimated_cost_usd": estimate_usd,
        }


def describe_spend(report: Mapping[str, Any]) -> str:
    """One log line: e.g. ``estimated at most $41.20, actually $17.85 (...)``."""
    tokens = ", ".join(
        f"{report[name]:,} {name.removesuffix('_tokens').replace('_', ' ')}" for name in TOKEN_FIELDS
    )
    actual = f"actually ${report['cost_usd']:,.2f}"
    if report["unpriced_models"]:
        actual += f" plus unpriced usage of {', '.join(report['unpriced_models'])} (pass prices= to price it)"
    estimate = report.get("estimated_cost_usd")
    head = f"estimated at most ${estimate:,.2f}, {actual}" if estimate is not None else actual.capitalize()
    return f"{head} ({tokens} tokens)"


def estimate_of(value: Any) -> float | None:
    """The pre-flight estimate in USD from a number or AnthropicCountTokensOperator's summary."""
    if isinstance(value, Mapping):
        value = (value.get("estimated_cost_usd") or {}).get("total_max")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def emit_metrics(report: Mapping[str, Any], *, dag_id: str, task_id: str) -> None:
    """Tokens and cost as Airflow metrics, named and tagged by DAG and task (best effort)."""
    from airflow_provider_batches._compat import Stats

    if Stats is None:
        return
    tags = {"dag_id": dag_id, "task_id": task_id}
    for name in TOKEN_FIELDS:
        Stats.incr(f"{METRIC_PREFIX}.{name}", count=int(report[name]), tags=tags)
        Stats.incr(f"{METRIC_PREFIX}.{name}.{dag_id}.{task_id}", count=int(report[name]))
    Stats.gauge(f"{METRIC_PREFIX}.cost_usd", float(report["cost_usd"]), tags=tags)
    Stats.gauge(f"{METRIC_PREFIX}.cost_usd.{dag_id}.{task_id}", float(report["cost_usd"]))
