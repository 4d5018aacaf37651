"""What a job actually cost: the ``usage`` of every result, added up per model and per round, priced.

:class:`UsageMeter` adds up the token counts of each succeeded result per model, from the lines the
results transfer decodes (:mod:`~airflow_provider_batches.result_lines`; or from a byte stream it
taps), long-context tiers and 1-hour cache writes apart; :class:`Spend` gathers the meters of a job
(by round), prices them with :mod:`~airflow_provider_batches.pricing` at batch rates (the same table
as the token-count estimate; an unpriced model is reported, never guessed), and reports them for
the manifest, the task log and Airflow's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from airflow_provider_batches.pricing import BATCH_DISCOUNT, Price, price_for, usage_cost_usd
from airflow_provider_batches.proof import holds_proof_id, is_proof_id
from airflow_provider_batches.result_lines import (
    BLOCK_BYTES,
    BlockSplitter,
    Message,
    ResultLine,
    Usage,
    decode_good_lines,
)

TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    # Of the cache writes, those with the 1-hour lifetime (priced 2x input, not 1.25x).
    "cache_creation_1h_input_tokens",
)
#: Appended to a model id for its requests priced at the model's long-context tier (a separate entry).
LONG_CONTEXT_SUFFIX = " (long context)"
#: Prefix of the metrics sent through Airflow's ``Stats``.
METRIC_PREFIX = "anthropic_batches"


_CUSTOM_ID = attrgetter("custom_id")
_MESSAGE = attrgetter("result.message")
_MODEL = attrgetter("model")
_USAGE = attrgetter("usage")
_CACHE_CREATION = attrgetter("cache_creation")
_ONE_HOUR = attrgetter("ephemeral_1h_input_tokens")
#: The four counts of ``usage`` in the order of :data:`TOKEN_FIELDS`; the first, third and fourth
#: are the prompt, which decides a long-context tier.
_COUNTS = tuple(map(attrgetter, TOKEN_FIELDS[:4]))
_PROMPT = (_COUNTS[0], _COUNTS[2], _COUNTS[3])


@dataclass
class UsageMeter:
    """Token counts per model of the results of one download attempt of one batch."""

    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The proof requests' usage (billed, never a published row), apart from the job's own requests.
    proof_tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    #: ``prices=`` overrides: which requests a long-context tier prices depends on the model's price.
    prices: Mapping[str, Mapping[str, float]] | None = None
    _splitter: BlockSplitter = field(default_factory=lambda: BlockSplitter(BLOCK_BYTES))
    _tiered: dict[str, Price | None] = field(default_factory=dict)

    def tap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks, unchanged, metered on the way."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk
        self.close()

    def feed(self, chunk: bytes) -> None:
        block = self._splitter.feed(chunk)
        if block is not None:
            self._add_block(block)

    def close(self) -> None:
        block = self._splitter.flush()
        if block is not None:
            self._add_block(block)

    def _add_block(self, block: bytes) -> None:
        # The transfer's own checks name a bad line; here each good line still counts.
        self.add_lines(decode_good_lines(block))

    def add_lines(self, lines: Sequence[ResultLine[Any]], *, holds_proof: bool | None = None) -> None:
        """The usage of result lines already decoded (the transfer's own decode: one pass, not two).

        A block of one model whose requests cannot reach a long-context tier (the common case) is added
        up in bulk, by C-level passes over the block; any other block one message at a time. A proof
        request's usage is kept apart (:attr:`proof_tokens`); ``holds_proof`` says whether the lines
        hold one, when the caller has looked already (None: look here)."""
        if holds_proof is None:
            holds_proof = holds_proof_id(list(map(_CUSTOM_ID, lines)))
        if holds_proof:
            proofs = [line for line in lines if is_proof_id(line.custom_id)]
            lines = [line for line in lines if not is_proof_id(line.custom_id)]
            for message in filter(None, map(_MESSAGE, proofs)):
                self._add_one(message, self.proof_tokens)
        messages: list[Message] = list(filter(None, map(_MESSAGE, lines)))
        if not messages:
            return
        models = set(map(_MODEL, messages))
        if len(models) != 1 or not self._add_in_bulk(models.pop(), messages):
            for message in messages:
                self._add_one(message, self.tokens)

    def _tier(self, model: str) -> Price | None:
        """The model's price when it has a long-context tier (None: one tier, or unpriced)."""
        if model not in self._tiered:
            price = price_for(model, self.prices)
            self._tiered[model] = price if price is not None and price.long_context else None
        return self._tiered[model]

    def _add_in_bulk(self, model: str | None, messages: list[Message]) -> bool:
        """Add the messages of one model at once; False (nothing added) when one may need its own tier
        or has no usage."""
        usages = list(map(_USAGE, messages))
        if None in usages:
            return False
        try:  # every count present (the API's case): one pass per count, none to drop nulls
            return self._add_usages(model or "", usages, lambda count: map(count, usages))
        except TypeError:  # a count is null: nothing was added yet
            return self._add_usages(model or "", usages, lambda count: filter(None, map(count, usages)))

    def _add_usages(
        self, model: str, usages: list[Usage], column: Callable[[Callable[[Usage], Any]], Iterable[int]]
    ) -> bool:
        sums = [sum(column(count)) for count in _COUNTS]
        tiered = self._tier(model)
        # No request reaches the tier when the largest of each prompt count together do not (a count
        # that adds up to 0 is 0 in every request: no pass for its largest).
        if tiered is not None and tiered.is_long_context(
            sum(
                max(column(count), default=0)
                for count, total in zip(_COUNTS, sums, strict=False)
                if total and count in _PROMPT
            )
        ):
            return False
        # 1-hour writes are part of cache_creation_input_tokens: none written, none of them.
        sums.append(
            sum(filter(None, map(_ONE_HOUR, filter(None, map(_CACHE_CREATION, usages))))) if sums[2] else 0
        )
        totals = _totals(self.tokens, model)
        for name, value in zip(TOKEN_FIELDS, sums, strict=True):
            totals[name] += value
        return True

    def _add_one(self, message: Message, into: dict[str, dict[str, int]]) -> None:
        usage = message.usage
        if usage is None:
            return
        key = message.model or ""
        tiered = self._tier(key)
        if tiered is not None and tiered.is_long_context(
            (usage.input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        ):
            key += LONG_CONTEXT_SUFFIX
        totals = _totals(into, key)
        totals["input_tokens"] += usage.input_tokens or 0
        totals["output_tokens"] += usage.output_tokens or 0
        totals["cache_creation_input_tokens"] += usage.cache_creation_input_tokens or 0
        totals["cache_read_input_tokens"] += usage.cache_read_input_tokens or 0
        if usage.cache_creation is not None:
            totals["cache_creation_1h_input_tokens"] += usage.cache_creation.ephemeral_1h_input_tokens or 0


def _totals(tokens: dict[str, dict[str, int]], key: str) -> dict[str, int]:
    totals = tokens.get(key)
    if totals is None:
        totals = tokens[key] = dict.fromkeys(TOKEN_FIELDS, 0)
    return totals


def model_and_tier(key: str) -> tuple[str, bool]:
    """A meter's key: the model id, and whether its long-context tier priced these requests."""
    if key.endswith(LONG_CONTEXT_SUFFIX):
        return key.removesuffix(LONG_CONTEXT_SUFFIX), True
    return key, False


def _add_tokens(into: dict[str, int], tokens: Mapping[str, int]) -> None:
    for name in TOKEN_FIELDS:
        into[name] = into.get(name, 0) + tokens.get(name, 0)


@dataclass
class Spend:
    """A job's metered usage by round and model, priced at batch rates."""

    prices: Mapping[str, Mapping[str, float]] | None = None
    by_round: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)
    #: The proof requests' usage per model (one tiny request per batch: billed, never a row).
    proofs: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, round_number: int, meter: UsageMeter) -> None:
        models = self.by_round.setdefault(round_number, {})
        for model, tokens in meter.tokens.items():
            _add_tokens(models.setdefault(model, {}), tokens)
        for model, tokens in meter.proof_tokens.items():
            _add_tokens(self.proofs.setdefault(model, {}), tokens)

    def _cost(self, key: str, tokens: Mapping[str, int]) -> float | None:
        model, long_context = model_and_tier(key)
        price = price_for(model, self.prices)
        if price is None:
            return None
        counts = {name: tokens.get(name, 0) for name in TOKEN_FIELDS}
        return usage_cost_usd(price, **counts, long_context=long_context)

    def report(self, estimate_usd: float | None = None) -> dict[str, Any]:
        """The manifest's ``spend``: tokens and USD per model, per round, and in all.

        ``cost_usd`` is the job's own requests (what the published rows' ``cost_usd`` add up to);
        ``proofs`` the proof requests' (one per batch); ``billed_cost_usd`` both, what the API bills.
        Amounts are not rounded, so they add up exactly."""
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
                    unpriced.add(model_and_tier(model)[0])
                else:
                    round_cost += cost
            _add_tokens(total_tokens, round_tokens)
            total_cost += round_cost
            per_round[str(number)] = {**round_tokens, "cost_usd": round_cost}
        for model, tokens in per_model.items():
            cost = self._cost(model, tokens)
            tokens["cost_usd"] = cost  # type: ignore[assignment]
        proof_tokens: dict[str, int] = dict.fromkeys(TOKEN_FIELDS, 0)
        proof_cost = 0.0
        for model, tokens in self.proofs.items():
            _add_tokens(proof_tokens, tokens)
            cost = self._cost(model, tokens)
            if cost is None:
                unpriced.add(model_and_tier(model)[0])
            else:
                proof_cost += cost
        return {
            **total_tokens,
            "cost_usd": total_cost,
            "proofs": {**proof_tokens, "cost_usd": proof_cost},
            "billed_cost_usd": total_cost + proof_cost,
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
    proofs = (report.get("proofs") or {}).get("cost_usd")
    if proofs:
        actual += f" (+${proofs:,.5f} for the proof requests)"
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
    billed = float(report.get("billed_cost_usd", report["cost_usd"]))  # proof requests included
    Stats.gauge(f"{METRIC_PREFIX}.cost_usd", billed, tags=tags)
    Stats.gauge(f"{METRIC_PREFIX}.cost_usd.{dag_id}.{task_id}", billed)
