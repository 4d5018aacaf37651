"""``ClientSettings`` is the one home of a connection's defaults: a connection that leaves an extra out
gets its default from there, and the connection form shows the same values, read from there."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from airflow_provider_batches import testing
from airflow_provider_batches.client_settings import CONNECTION_TYPE, ClientSettings
from airflow_provider_batches.get_provider_info import get_provider_info
from airflow_provider_batches.hooks.anthropic import CONNECTION_EXTRAS, AnthropicHook
from tests.fakes import API_KEY, BASE_URL
from tests.hooks.conftest import set_connection

DEFAULTS = ClientSettings(api_key="")
#: A value of each extra's kind that no default has.
OTHER = {str: "2099-01-01", float: 12.5, int: 7}


def form_fields() -> dict[str, Any]:
    (connection,) = get_provider_info()["connection-types"]
    return dict(connection["conn-fields"])


def test_a_connection_without_extras_gets_every_default_of_client_settings() -> None:
    assert AnthropicHook().get_settings() == ClientSettings(api_key=API_KEY, base_url=BASE_URL)


def test_an_empty_extra_keeps_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={name: "" for name in CONNECTION_EXTRAS})

    assert AnthropicHook().get_settings() == ClientSettings(api_key=API_KEY, base_url=BASE_URL)


@pytest.mark.parametrize("name", sorted(CONNECTION_EXTRAS))
def test_each_extra_sets_the_client_settings_field_of_its_name(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = OTHER[CONNECTION_EXTRAS[name]]
    set_connection(monkeypatch, extra={name: str(value)})  # extras typed in the form arrive as text

    settings = AnthropicHook().get_settings()

    assert getattr(settings, name) == value
    assert dataclasses.replace(settings, **{name: getattr(DEFAULTS, name)}) == ClientSettings(
        api_key=API_KEY, base_url=BASE_URL
    )  # and nothing else changed


@pytest.mark.parametrize("name", sorted(CONNECTION_EXTRAS))
def test_the_connection_form_offers_each_extra_with_the_default_of_client_settings(name: str) -> None:
    assert form_fields()[name]["schema"]["default"] == getattr(DEFAULTS, name)


def test_the_connection_form_shows_whole_seconds_without_a_decimal_point() -> None:
    timeout = form_fields()["timeout"]["schema"]["default"]

    assert (timeout, type(timeout)) == (DEFAULTS.timeout, int)  # 600, not 600.0


def test_the_connection_form_shows_the_default_base_url_and_budget() -> None:
    (connection,) = get_provider_info()["connection-types"]

    assert connection["ui-field-behaviour"]["placeholders"]["host"] == DEFAULTS.base_url
    budget = form_fields()["max_requests_per_minute"]["description"]
    assert f"Default {DEFAULTS.max_requests_per_minute} " in budget


def test_the_hook_the_form_and_the_testing_plugin_name_one_connection_type() -> None:
    (connection,) = get_provider_info()["connection-types"]
    named = {AnthropicHook.conn_type, connection["connection-type"], testing.CONNECTION_TYPE}

    assert named == {CONNECTION_TYPE}
