"""The price table: exact model ids, dated ids through their alias, overrides first, the batch discount."""

from __future__ import annotations

import pytest

from airflow_provider_batches.errors import UnpricedModelError
from airflow_provider_batches.pricing import (
    BATCH_DISCOUNT,
    DATED_IDS,
    DEFAULT_PRICES,
    Price,
    batch_cost_usd,
    price_for,
    require_prices,
)


def test_every_current_model_has_its_own_entry() -> None:
    assert price_for("claude-opus-4-7") == Price(5.0, 25.0)
    assert price_for("claude-opus-4-6") == Price(5.0, 25.0)
    assert price_for("claude-sonnet-4-6") == Price(3.0, 15.0)
    assert price_for("claude-haiku-4-5") == Price(1.0, 5.0)


def test_a_name_is_never_priced_by_its_prefix() -> None:
    assert price_for("claude-opus-4") is None
    assert price_for("claude-opus-4-8") is None  # a newer model does not inherit claude-opus-4-7's price
    assert price_for("claude-haiku-4-5-preview") is None


def test_a_dated_id_has_the_price_of_its_alias() -> None:
    assert price_for("claude-haiku-4-5-20251001") == price_for("claude-haiku-4-5")
    assert price_for("claude-opus-4-5-20251101") == price_for("claude-opus-4-5")


def test_every_dated_id_points_at_a_priced_alias() -> None:
    assert set(DATED_IDS.values()) <= set(DEFAULT_PRICES)


def test_deprecated_models_are_not_in_the_table() -> None:
    assert "claude-sonnet-4-5" not in DEFAULT_PRICES  # end of life 2026-11-30
    assert "claude-sonnet-4-5-20250929" not in DATED_IDS


def test_overrides_come_before_the_table() -> None:
    overrides = {"claude-haiku-4-5": {"input": 2.0, "output": 8.0}}
    assert price_for("claude-haiku-4-5", overrides) == Price(2.0, 8.0)
    assert price_for("claude-haiku-4-5-20251001", overrides) == Price(2.0, 8.0)


def test_overrides_price_a_model_the_table_does_not_know() -> None:
    assert price_for("claude-opus-5", {"claude-opus-5": {"input": 4, "output": 20}}) == Price(4.0, 20.0)


def test_the_batch_price_is_half_the_standard_price() -> None:
    assert BATCH_DISCOUNT == 0.5
    assert batch_cost_usd(Price(3.0, 15.0), 1_000_000, 1_000_000) == 9.0


def test_require_prices_names_every_unpriced_model_and_the_prices_fix() -> None:
    with pytest.raises(UnpricedModelError) as raised:
        require_prices(["claude-haiku-4-5", "claude-opus-5", "claude-emulator-test"])
    message = str(raised.value)
    assert "no price is known for claude-emulator-test, claude-opus-5" in message
    assert "prices={'claude-emulator-test': {'input': ..., 'output': ...}, 'claude-opus-5'" in message


def test_require_prices_returns_each_price() -> None:
    assert require_prices(["claude-haiku-4-5"]) == {"claude-haiku-4-5": Price(1.0, 5.0)}
