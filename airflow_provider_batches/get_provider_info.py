"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_batches import __version__
from airflow_provider_batches.client_settings import CONNECTION_TYPE, ClientSettings

INTEGRATION = "Anthropic Message Batches"


def _number(value: float) -> float | int:
    """``600`` rather than ``600.0`` in the form."""
    return int(value) if float(value).is_integer() else value


def get_provider_info() -> dict[str, Any]:
    defaults = ClientSettings(api_key="")  # the connection form shows ClientSettings' defaults, not copies
    return {
        "package-name": "airflow-provider-batches",
        "name": "Anthropic Message Batches",
        "description": "Retry-safe, deferrable, streaming integration for the Anthropic Message Batches API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.anthropic.com/en/docs/build-with-claude/batch-processing",
                "tags": ["ai"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_batches.hooks.anthropic"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_provider_batches.operators.batches",
                    "airflow_provider_batches.operators.cancel_delete",
                    "airflow_provider_batches.operators.tokens",
                ],
            }
        ],
        "sensors": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_batches.sensors.batches"]}
        ],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_batches.triggers.batches"]}
        ],
        "task-decorators": [
            {
                "class-name": "airflow_provider_batches.decorators.anthropic_batch.anthropic_batch_task",
                "name": "anthropic_batch",
            }
        ],
        "extra-links": ["airflow_provider_batches.links.AnthropicBatchLink"],
        "transfers": [
            {
                "source-integration-name": INTEGRATION,
                "target-integration-name": "Common IO",
                "python-module": "airflow_provider_batches.transfers.results_to_object_storage",
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_batches.hooks.anthropic.AnthropicHook",
                "hook-name": "Anthropic Message Batches",
                "connection-type": CONNECTION_TYPE,
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": _number(defaults.timeout)},
                        "description": "Read timeout of one API call.",
                    },
                    "connect_timeout": {
                        "label": "Connect timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": _number(defaults.connect_timeout)},
                        "description": "Timeout of opening a connection to the API.",
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "default": defaults.max_retries},
                        "description": "Retries of a failed call (429, 5xx, 529, network errors).",
                    },
                    "max_retry_wait": {
                        "label": "Max total retry wait (seconds)",
                        "schema": {"type": ["number", "null"], "default": _number(defaults.max_retry_wait)},
                        "description": "Upper bound on the time one call spends waiting between retries.",
                    },
                    "max_requests_per_minute": {
                        "label": "Max requests per minute (waits)",
                        "schema": {"type": ["integer", "null"], "default": defaults.max_requests_per_minute},
                        "description": "Request budget of the waits (triggers, sensors) per process "
                        f"on this API key; 0 = unlimited. Default {defaults.max_requests_per_minute} fits "
                        "the lowest tier (50).",
                    },
                    "betas": {
                        "label": "Default betas",
                        "schema": {"type": ["string", "null"]},
                        "description": "Comma-separated anthropic-beta values sent on every call.",
                    },
                    "anthropic_version": {
                        "label": "anthropic-version",
                        "schema": {"type": ["string", "null"], "default": defaults.anthropic_version},
                        "description": "API version header.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {"host": defaults.base_url},
                },
            }
        ],
    }
