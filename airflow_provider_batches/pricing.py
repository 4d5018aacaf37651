"""Prices, in USD per million tokens at standard (non-batch) rates, and the one cost formula.

Every estimate (count tokens), spend report (manifest, task log, metrics) and Parquet ``cost_usd``
goes through :func:`usage_cost_usd`: batch discount (50 %, input and output alike), 5-minute cache
writes, 1-hour cache writes, cache reads, and a model's long-context tier.

Every row is one exact model id with its source page and the date it was checked; a name is never
matched by prefix (models of one family are priced differently). A dated id maps to its alias in
``DATED_IDS``, explicitly. Cache prices are each model's own (most are 1.25x, 2x and 0.1x of the
input price, not all: Claude Opus 5.5 reads at 0.05x, Fable 5.1 at 0.025x). A model with no price
here (see ``UNPRICED``, or a model newer than the table) is reported, never guessed: pass
``prices={"<model id>": {"input": ..., "output": ...}}`` (optional ``cache_write_5m``,
``cache_write_1h``, ``cache_read``; by default 1.25x, 2x and 0.1x of ``input``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.errors import UnpricedModelError

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_DISCOUNT = 0.5

#: Multiples of the input price that most models' cache prices follow; used for ``prices=`` overrides
#: that give only ``input`` and ``output``.
CACHE_WRITE_5M_MULTIPLIER = 1.25
CACHE_WRITE_1H_MULTIPLIER = 2.0
CACHE_READ_MULTIPLIER = 0.1

PRICING_PAGE = "https://platform.claude.com/docs/en/about-claude/pricing"
CHECKED = "2026-12-04"


@dataclass(frozen=True)
class Price:
    """A model's standard prices per million tokens (cache prices default to the usual multiples).

    ``long_context`` prices every token of a request whose prompt (input, cache writes and cache
    reads) is over ``long_context_above`` tokens, output included.
    """

    input_per_mtok: float
    output_per_mtok: float
    cache_write_5m_per_mtok: float | None = None
    cache_write_1h_per_mtok: float | None = None
    cache_read_per_mtok: float | None = None
    long_context: Price | None = None
    long_context_above: int | None = None
    source: str = field(default="", compare=False)
    checked: str = field(default="", compare=False)

    @property
    def cache_write_5m(self) -> float:
        value = self.cache_write_5m_per_mtok
        return self.input_per_mtok * CACHE_WRITE_5M_MULTIPLIER if value is None else value

    @property
    def cache_write_1h(self) -> float:
        value = self.cache_write_1h_per_mtok
        return self.input_per_mtok * CACHE_WRITE_1H_MULTIPLIER if value is None else value

    @property
    def cache_read(self) -> float:
        value = self.cache_read_per_mtok
        return self.input_per_mtok * CACHE_READ_MULTIPLIER if value is None else value

    def tier(self, prompt_tokens: int) -> Price:
        """The prices a request with this many prompt tokens pays."""
        above = self.long_context_above
        if self.long_context is not None and above is not None and prompt_tokens > above:
            return self.long_context
        return self

    def is_long_context(self, prompt_tokens: int) -> bool:
        return self.tier(prompt_tokens) is not self


def _row(input_: float, output: float, write_5m: float, write_1h: float, read: float, source: str) -> Price:
    return Price(input_, output, write_5m, write_1h, read, source=source, checked=CHECKED)


_MODELS = "https://platform.claude.com/docs/en/models"

#: Claude Haiku 5.5 prices a request by its prompt: up to 100K tokens, or over (5x, every token).
_HAIKU_5_5_LONG = Price(0.50, 2.50, 0.625, 1.00, 0.05)

DEFAULT_PRICES: Mapping[str, Price] = {
    # Claude 5 generation. Fable 5.2 / Mythos 5.2 (released 2026-11-09): the stored copy of the
    # official pages predates them; the rates are those two release notes quote from the pricing page
    # (rightsize v0.10.2, LaoZhang "Claude Fable 5.2", 2026-11-10). Mythos shares Fable's prices.
    "claude-fable-5-2": _row(8.0, 40.0, 10.0, 16.0, 0.20, f"{_MODELS}/fable-5-2/overview"),
    "claude-mythos-5-2": _row(8.0, 40.0, 10.0, 16.0, 0.20, f"{_MODELS}/fable-5-2/overview"),
    "claude-fable-5-1": _row(10.0, 50.0, 12.50, 20.0, 0.25, PRICING_PAGE),
    "claude-mythos-5-1": _row(10.0, 50.0, 12.50, 20.0, 0.25, PRICING_PAGE),
    "claude-fable-5": _row(10.0, 50.0, 12.50, 20.0, 1.0, PRICING_PAGE),
    "claude-mythos-5": _row(10.0, 50.0, 12.50, 20.0, 1.0, PRICING_PAGE),
    "claude-opus-5-5": _row(4.0, 20.0, 5.0, 8.0, 0.20, f"{_MODELS}/opus-5-5/overview"),
    "claude-opus-5": _row(5.0, 25.0, 6.25, 10.0, 0.50, PRICING_PAGE),
    # Sonnet 5.5 cache reads: $0.20 at launch (model page), cut to $0.10 on 2026-10-07 (the pricing
    # page as quoted by claudit v1.9.2 and PromptFuel v1.0.23).
    "claude-sonnet-5-5": _row(2.0, 10.0, 2.50, 4.0, 0.10, f"{_MODELS}/sonnet-5-5/overview"),
    "claude-sonnet-5": _row(2.0, 10.0, 2.50, 4.0, 0.20, f"{_MODELS}/sonnet-5/overview"),
    "claude-haiku-5-5": Price(
        0.10,
        0.50,
        0.125,
        0.20,
        0.01,
        long_context=_HAIKU_5_5_LONG,
        long_context_above=100_000,
        source=f"{_MODELS}/haiku-5-5/overview",
        checked=CHECKED,
    ),
    # Claude 4 generation still served.
    "claude-opus-4-8": _row(5.0, 25.0, 6.25, 10.0, 0.50, PRICING_PAGE),
    "claude-opus-4-7": _row(5.0, 25.0, 6.25, 10.0, 0.50, PRICING_PAGE),
    "claude-opus-4-6": _row(5.0, 25.0, 6.25, 10.0, 0.50, PRICING_PAGE),
    "claude-opus-4-5": _row(5.0, 25.0, 6.25, 10.0, 0.50, PRICING_PAGE),
    "claude-sonnet-4-6": _row(3.0, 15.0, 3.75, 6.0, 0.30, f"{_MODELS}/sonnet-4-6/overview"),
    "claude-haiku-4-5": _row(1.0, 5.0, 1.25, 2.0, 0.10, PRICING_PAGE),
}

#: Models of the official SDK's model list with no price here, and why.
UNPRICED: Mapping[str, str] = {
    "claude-mythos-preview": "a research preview by invitation: no list price is published",
    "claude-sonnet-4-5": "retired on 2026-11-30 (platform.claude.com/docs/en/models/sonnet-4-5/overview)",
    "claude-sonnet-4-5-20250929": "retired on 2026-11-30, as claude-sonnet-4-5",
}

#: Dated model ids and the alias whose price they have.
DATED_IDS: Mapping[str, str] = {
    "claude-opus-4-5-20251101": "claude-opus-4-5",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
}


def _override(entry: Mapping[str, float]) -> Price:
    def optional(name: str) -> float | None:
        return float(entry[name]) if entry.get(name) is not None else None

    return Price(
        float(entry["input"]),
        float(entry["output"]),
        optional("cache_write_5m"),
        optional("cache_write_1h"),
        optional("cache_read"),
        source="prices=",
    )


def price_for(model: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Price | None:
    """The price of exactly ``model`` (or of the alias of a dated id), overrides first; None when unknown."""
    names = [name for name in (model, DATED_IDS.get(model)) if name is not None]
    for name in names:
        if overrides and name in overrides:
            return _override(overrides[name])
    for name in names:
        if name in DEFAULT_PRICES:
            return DEFAULT_PRICES[name]
    return None


def require_prices(
    models: Iterable[str], overrides: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, Price]:
    """The price of every model, or :class:`UnpricedModelError` naming each unpriced one and the fix."""
    prices = {model: price_for(model, overrides) for model in models}
    unpriced = sorted(model for model, price in prices.items() if price is None)
    if unpriced:
        example = ", ".join(f"{model!r}: {{'input': ..., 'output': ...}}" for model in unpriced)
        reasons = "".join(f" ({model}: {UNPRICED[model]})" for model in unpriced if model in UNPRICED)
        raise UnpricedModelError(
            f"no price is known for {', '.join(unpriced)}{reasons}, so the cost cannot be estimated: pass "
            f"prices={{{example}}} (standard USD per million tokens; the batch discount is applied)"
        )
    return {model: price for model, price in prices.items() if price is not None}


def usage_cost_usd(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    cache_creation_1h_input_tokens: int = 0,
    discount: float = BATCH_DISCOUNT,
    long_context: bool | None = None,
) -> float:
    """The one cost formula: what ``usage`` costs inside a batch.

    ``cache_creation_input_tokens`` are all cache writes; ``cache_creation_1h_input_tokens`` of them
    were written with the 1-hour lifetime (the rest, 5-minute). The long-context tier is chosen from
    the prompt (one request's usage), or forced with ``long_context`` (a sum of requests of one tier).
    """
    if long_context is not None:
        price = price.long_context if long_context and price.long_context is not None else price
    tokens = (
        input_tokens,
        output_tokens,
        cache_creation_input_tokens,
        cache_read_input_tokens,
        cache_creation_1h_input_tokens,
    )
    return float(_cost(_NUMBERS, price, tokens, discount, tiered=long_context is None))


def usage_costs_usd(
    price: Price,
    *,
    input_tokens: pa.Array,
    output_tokens: pa.Array,
    cache_creation_input_tokens: pa.Array,
    cache_read_input_tokens: pa.Array,
    cache_creation_1h_input_tokens: pa.Array,
    discount: float = BATCH_DISCOUNT,
) -> pa.Array:
    """:func:`usage_cost_usd` of many requests of one model at once (the Parquet ``cost_usd`` column):
    the same formula over pyarrow arrays, one usage per row, a null count taken as 0."""
    import pyarrow.compute as pc

    tokens = tuple(
        pc.fill_null(column, 0)
        for column in (
            input_tokens,
            output_tokens,
            cache_creation_input_tokens,
            cache_read_input_tokens,
            cache_creation_1h_input_tokens,
        )
    )
    return _cost(_arrow_ops(), price, tokens, discount, tiered=True)


def _cost(ops: _Ops, price: Price, tokens: tuple[Any, ...], discount: float, *, tiered: bool) -> Any:
    """The formula, once, over numbers or arrays (``ops``): each token kind at its rate, the 1-hour
    writes out of all cache writes, the long-context tier when the prompt is over its threshold."""
    input_tokens, output_tokens, cache_writes, cache_reads, cache_writes_1h = tokens
    one_hour = ops.minimum(cache_writes_1h, cache_writes)

    def at(rates: Price) -> Any:
        standard = ops.add(
            ops.add(
                ops.add(
                    ops.add(
                        ops.mul(input_tokens, rates.input_per_mtok),
                        ops.mul(ops.sub(cache_writes, one_hour), rates.cache_write_5m),
                    ),
                    ops.mul(one_hour, rates.cache_write_1h),
                ),
                ops.mul(cache_reads, rates.cache_read),
            ),
            ops.mul(output_tokens, rates.output_per_mtok),
        )
        return ops.mul(ops.div(standard, 1_000_000), discount)

    long_rates, above = price.long_context, price.long_context_above
    if not tiered or long_rates is None or above is None:
        return at(price)
    prompt = ops.add(ops.add(input_tokens, cache_writes), cache_reads)
    return ops.where(ops.greater(prompt, above), lambda: at(long_rates), lambda: at(price))


class _Ops:
    """Arithmetic for :func:`_cost`: Python numbers here, pyarrow arrays in :func:`_arrow_ops`."""

    add = staticmethod(operator.add)
    sub = staticmethod(operator.sub)
    mul = staticmethod(operator.mul)
    div = staticmethod(operator.truediv)
    minimum = staticmethod(min)
    greater = staticmethod(operator.gt)

    @staticmethod
    def where(condition: Any, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        return then() if condition else otherwise()


_NUMBERS = _Ops()


def _arrow_ops() -> _Ops:
    import pyarrow.compute as pc

    ops = _Ops()
    ops.add, ops.sub, ops.mul, ops.div = pc.add, pc.subtract, pc.multiply, pc.divide  # type: ignore[method-assign]
    ops.minimum, ops.greater = pc.min_element_wise, pc.greater  # type: ignore[method-assign,assignment]
    ops.where = lambda condition, then, otherwise: pc.if_else(condition, then(), otherwise())  # type: ignore[method-assign]
    return ops


def batch_cost_usd(
    price: Price, input_tokens: int, output_tokens: int, discount: float = BATCH_DISCOUNT
) -> float:
    """What plain input and output tokens of one request cost inside a batch (:func:`usage_cost_usd`)."""
    return usage_cost_usd(price, input_tokens=input_tokens, output_tokens=output_tokens, discount=discount)
