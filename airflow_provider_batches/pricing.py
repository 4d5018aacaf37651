"""Prices used for cost estimates, in USD per million tokens at standard (non-batch) rates.

Prices change: this table is a documented default (public list prices as of 2026-11) that every
operator lets users override with ``prices={"model-prefix": {"input": ..., "output": ...}}``. A model
matches the longest prefix in the table. Batch usage costs ``BATCH_DISCOUNT`` of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BATCH_DISCOUNT = 0.5

DEFAULT_PRICES: Mapping[str, Mapping[str, float]] = {
    "claude-opus-4-5": {"input": 5.0, "output": 25.0},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0},
    "claude-opus-4": {"input": 15.0, "output": 75.0},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0},
    "claude-3-7-sonnet": {"input": 3.0, "output": 15.0},
    "claude-3-5-sonnet": {"input": 3.0, "output": 15.0},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0},
    "claude-3-5-haiku": {"input": 0.8, "output": 4.0},
    "claude-3-opus": {"input": 15.0, "output": 75.0},
    "claude-3-haiku": {"input": 0.25, "output": 1.25},
}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


def price_for(model: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Price | None:
    """The price of ``model`` by longest matching prefix, overrides first; None when unknown."""
    for table in (overrides or {}, DEFAULT_PRICES):
        matches = [prefix for prefix in table if model.startswith(prefix)]
        if matches:
            entry = table[max(matches, key=len)]
            return Price(float(entry["input"]), float(entry["output"]))
    return None


def batch_cost_usd(
    price: Price, input_tokens: int, output_tokens: int, discount: float = BATCH_DISCOUNT
) -> float:
    """What the tokens cost inside a batch (``discount`` of the standard price)."""
    standard = input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok
    return standard / 1_000_000 * discount
