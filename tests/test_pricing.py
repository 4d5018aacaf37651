"""The price table and the one cost formula: exact model ids, dated ids through their alias, overrides
first, batch discount, 5-minute and 1-hour cache writes, cache reads, long-context tiers."""

from __future__ import annotations

import typing

import anthropic
import pytest

from airflow_provider_batches.errors import UnpricedModelError
from airflow_provider_batches.pricing import (
    BATCH_DISCOUNT,
    DATED_IDS,
    DEFAULT_PRICES,
    UNPRICED,
    Price,
    batch_cost_usd,
    price_for,
    require_prices,
    usage_cost_usd,
)


def sdk_models() -> list[str]:
    """The model ids the installed official SDK lists (its ``Model`` literal)."""
    literals = [
        arg for arg in typing.get_args(anthropic.types.Model) if typing.get_origin(arg) is typing.Literal
    ]
    return [model for literal in literals for model in typing.get_args(literal)]


def test_every_model_of_the_official_sdk_has_a_price_or_a_documented_reason() -> None:
    models = sdk_models()

    assert "claude-opus-5-5" in models  # the SDK pinned is current enough to list the Claude 5 models
    missing = [model for model in models if price_for(model) is None and model not in UNPRICED]
    assert missing == []


def test_every_row_names_its_source_and_the_day_it_was_checked() -> None:
    for model, price in DEFAULT_PRICES.items():
        assert price.source.startswith("https://platform.claude.com/docs/"), model
        assert price.checked == "2026-12-04", model


def test_the_claude_5_models_have_their_own_prices() -> None:
    assert price_for("claude-opus-5-5") == Price(4.0, 20.0, 5.0, 8.0, 0.20)
    assert price_for("claude-sonnet-5-5") == Price(2.0, 10.0, 2.50, 4.0, 0.10)
    assert price_for("claude-fable-5-1") == Price(10.0, 50.0, 12.50, 20.0, 0.25)
    assert price_for("claude-opus-4-7") == Price(5.0, 25.0, 6.25, 10.0, 0.50)


def test_one_hour_cache_writes_cost_twice_the_input_price_and_five_minute_ones_a_quarter_more() -> None:
    price = price_for("claude-haiku-4-5")
    assert price is not None

    five_minutes = usage_cost_usd(
        price, input_tokens=0, output_tokens=0, cache_creation_input_tokens=1_000_000, discount=1.0
    )
    one_hour = usage_cost_usd(
        price,
        input_tokens=0,
        output_tokens=0,
        cache_creation_input_tokens=1_000_000,
        cache_creation_1h_input_tokens=1_000_000,
        discount=1.0,
    )
    reads = usage_cost_usd(
        price, input_tokens=0, output_tokens=0, cache_read_input_tokens=1_000_000, discount=1.0
    )

    assert (five_minutes, one_hour, reads) == pytest.approx((1.25, 2.0, 0.10))


def test_a_prompt_over_the_long_context_threshold_pays_the_higher_tier_on_every_token() -> None:
    haiku = price_for("claude-haiku-5-5")
    assert haiku is not None

    short = usage_cost_usd(haiku, input_tokens=100_000, output_tokens=1_000, discount=1.0)
    long = usage_cost_usd(haiku, input_tokens=100_001, output_tokens=1_000, discount=1.0)

    assert short == pytest.approx(100_000 * 0.10 / 1e6 + 1_000 * 0.50 / 1e6)
    assert long == pytest.approx(100_001 * 0.50 / 1e6 + 1_000 * 2.50 / 1e6)


def test_cache_reads_count_toward_the_long_context_threshold() -> None:
    haiku = price_for("claude-haiku-5-5")
    assert haiku is not None

    assert haiku.is_long_context(60_000 + 50_000)
    cost = usage_cost_usd(
        haiku, input_tokens=60_000, output_tokens=0, cache_read_input_tokens=50_000, discount=1.0
    )
    assert cost == pytest.approx(60_000 * 0.50 / 1e6 + 50_000 * 0.05 / 1e6)


def test_a_name_is_never_priced_by_its_prefix() -> None:
    assert price_for("claude-opus-4") is None
    assert price_for("claude-opus-5-6") is None  # a newer model does not inherit claude-opus-5-5's price
    assert price_for("claude-haiku-4-5-preview") is None


def test_a_dated_id_has_the_price_of_its_alias() -> None:
    assert price_for("claude-haiku-4-5-20251001") == price_for("claude-haiku-4-5")
    assert price_for("claude-opus-4-5-20251101") == price_for("claude-opus-4-5")


def test_every_dated_id_points_at_a_priced_alias() -> None:
    assert set(DATED_IDS.values()) <= set(DEFAULT_PRICES)


def test_retired_models_are_not_priced_and_say_why() -> None:
    assert "claude-sonnet-4-5" not in DEFAULT_PRICES
    assert "retired" in UNPRICED["claude-sonnet-4-5"]


def test_overrides_come_before_the_table_with_the_usual_cache_multiples() -> None:
    overrides = {"claude-haiku-4-5": {"input": 2.0, "output": 8.0}}
    price = price_for("claude-haiku-4-5-20251001", overrides)

    assert price == Price(2.0, 8.0)
    assert price is not None
    assert (price.cache_write_5m, price.cache_write_1h, price.cache_read) == pytest.approx((2.5, 4.0, 0.2))


def test_overrides_may_give_their_own_cache_prices() -> None:
    price = price_for("x", {"x": {"input": 1, "output": 2, "cache_read": 0.01}})
    assert price is not None
    assert price.cache_read == 0.01


def test_the_batch_price_is_half_the_standard_price() -> None:
    assert BATCH_DISCOUNT == 0.5
    assert batch_cost_usd(Price(3.0, 15.0), 1_000_000, 1_000_000) == 9.0


def test_require_prices_names_every_unpriced_model_its_reason_and_the_prices_fix() -> None:
    with pytest.raises(UnpricedModelError) as raised:
        require_prices(["claude-haiku-4-5", "claude-mythos-preview", "claude-emulator-test"])
    message = str(raised.value)
    assert "no price is known for claude-emulator-test, claude-mythos-preview" in message
    assert "no list price is published" in message
    assert "prices={'claude-emulator-test': {'input': ..., 'output': ...}" in message


def test_the_formula_over_arrays_gives_each_usage_exactly_what_the_formula_gives_it() -> None:
    import random

    import pyarrow as pa

    from airflow_provider_batches.pricing import usage_costs_usd

    rng = random.Random(23)
    names = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    prices = [*DEFAULT_PRICES.values(), Price(1.0, 5.0, source="prices=")]
    for price in prices:
        usages = []
        for _ in range(200):
            usage = {name: rng.choice([0, rng.randrange(1, 300_000)]) for name in names}
            usage["cache_creation_1h_input_tokens"] = rng.choice(  # none, some, all, or more than the writes
                [0, usage["cache_creation_input_tokens"] // 3, usage["cache_creation_input_tokens"], 10**6]
            )
            usages.append(usage)
        usages.append(
            {**dict.fromkeys(names, 0), "input_tokens": 100_000, "cache_creation_1h_input_tokens": 0}
        )
        usages.append(
            {**dict.fromkeys(names, 0), "input_tokens": 100_001, "cache_creation_1h_input_tokens": 0}
        )
        columns = {name: pa.array([usage[name] for usage in usages], pa.int64()) for name in usages[0]}

        costs = usage_costs_usd(price, **columns).to_pylist()

        assert costs == [usage_cost_usd(price, **usage) for usage in usages], price  # type: ignore[arg-type]


def test_a_missing_token_count_in_the_arrays_counts_as_zero() -> None:
    import pyarrow as pa

    from airflow_provider_batches.pricing import usage_costs_usd

    price = Price(1.0, 5.0)
    given = pa.array([1_000_000, None], pa.int64())
    none = pa.array([None, None], pa.int64())

    costs = usage_costs_usd(
        price,
        input_tokens=given,
        output_tokens=none,
        cache_creation_input_tokens=none,
        cache_read_input_tokens=none,
        cache_creation_1h_input_tokens=none,
    )

    assert costs.to_pylist() == [0.5, 0.0]
