"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_batches import __version__

INTEGRATION = "Anthropic Message Batches"


def get_provider_info() -> dict[str, Any]:
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
                "connection-type": "anthropic_batches",
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 600},
                        "description": "Read timeout of one API call.",
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "default": 2},
                        "description": "Retries of a failed call (429, 5xx, 529, network errors).",
                    },
                    "max_retry_wait": {
                        "label": "Max total retry wait (seconds)",
                        "schema": {"type": ["number", "null"], "default": 300},
                        "description": "Upper bound on the time one call spends waiting between retries.",
                    },
                    "max_requests_per_minute": {
                        "label": "Max requests per minute (waits)",
                        "schema": {"type": ["integer", "null"], "default": 40},
                        "description": "Request budget of the waits (triggers, sensors) per process "
                        "on this API key; 0 = unlimited. Default 40 fits the lowest tier (50).",
                    },
                    "betas": {
                        "label": "Default betas",
                        "schema": {"type": ["string", "null"]},
                        "description": "Comma-separated anthropic-beta values sent on every call.",
                    },
                    "anthropic_version": {
                        "label": "anthropic-version",
                        "schema": {"type": ["string", "null"], "default": "2023-06-01"},
                        "description": "API version header.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {"host": "https://api.anthropic.com"},
                },
            }
        ],
    }
