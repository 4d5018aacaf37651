"""Prices used for cost estimates, in USD per million tokens at standard (non-batch) rates.

Source: Anthropic's published list prices (https://docs.anthropic.com/en/docs/about-claude/pricing
and the model announcements), table compiled 2026-11-26. The Message Batches API bills
``BATCH_DISCOUNT`` (50 %) of them, for input and output alike; :func:`batch_cost_usd` applies it.

Every entry is one exact model id: a name is never matched by prefix, because models of one family
are priced differently (``claude-opus-4-5`` costs a third of ``claude-opus-4-1``). A dated id maps
to its alias in ``DATED_IDS``, explicitly. Only current models are listed (none deprecated or
retired by 2026-11-30); a model not listed, such as a newer one whose price is not in the table
yet, has no price: pass ``prices={"<model id>": {"input": ..., "output": ...}}`` to the operator.
The emulator's test model ``claude-emulator-test`` has no price either; tests pass ``prices=``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from airflow_provider_batches.errors import UnpricedModelError

BATCH_DISCOUNT = 0.5

DEFAULT_PRICES: Mapping[str, Mapping[str, float]] = {
    "claude-opus-4-7": {"input": 5.0, "output": 25.0},
    "claude-opus-4-6": {"input": 5.0, "output": 25.0},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0},
}

#: Dated model ids and the alias whose price they have.
DATED_IDS: Mapping[str, str] = {
    "claude-opus-4-5-20251101": "claude-opus-4-5",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


def price_for(model: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Price | None:
    """The price of exactly ``model`` (or of the alias of a dated id), overrides first; None when unknown."""
    for table in (overrides or {}, DEFAULT_PRICES):
        for name in (model, DATED_IDS.get(model)):
            if name is not None and name in table:
                entry = table[name]
                return Price(float(entry["input"]), float(entry["output"]))
    return None


def require_prices(
    models: Iterable[str], overrides: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, Price]:
    """The price of every model, or :class:`UnpricedModelError` naming each unpriced one and the fix."""
    prices = {model: price_for(model, overrides) for model in models}
    unpriced = sorted(model for model, price in prices.items() if price is None)
    if unpriced:
        example = ", ".join(f"{model!r}: {{'input': ..., 'output': ...}}" for model in unpriced)
        raise UnpricedModelError(
            f"no price is known for {', '.join(unpriced)}, so the cost cannot be estimated: pass "
            f"prices={{{example}}} (standard USD per million tokens; the batch discount is applied)"
        )
    return {model: price for model, price in prices.items() if price is not None}


def batch_cost_usd(
    price: Price, input_tokens: int, output_tokens: int, discount: float = BATCH_DISCOUNT
) -> float:
    """What the tokens cost inside a batch (``discount`` of the standard price)."""
    standard = input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok
    return standard / 1_000_000 * discount


#: Prompt-cache writes (5-minute cache) and reads, as multiples of the model's input price.
CACHE_WRITE_MULTIPLIER = 1.25
CACHE_READ_MULTIPLIER = 0.1


def usage_cost_usd(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    discount: float = BATCH_DISCOUNT,
) -> float:
    """What reported ``usage`` costs inside a batch, cache writes and reads included."""
    effective_input = (
        input_tokens
        + cache_creation_input_tokens * CACHE_WRITE_MULTIPLIER
        + cache_read_input_tokens * CACHE_READ_MULTIPLIER
    )
    standard = effective_input * price.input_per_mtok + output_tokens * price.output_per_mtok
    return standard / 1_000_000 * discount
