"""Names users' DAGs import keep working from the paths they were published at, after any move."""

from __future__ import annotations

import importlib

import pytest

TRANSFER = "transfers.results_to_object_storage"
# (published module, name, the module it lives in now), relative to airflow_provider_batches
MOVED = [
    ("hooks.anthropic", "BatchBody", "bodies"),
    ("operators.batches", "AnthropicCancelBatchOperator", "operators.cancel_delete"),
    ("operators.batches", "AnthropicDeleteBatchOperator", "operators.cancel_delete"),
    ("operators.batches", "cancel_if_running", "operators.cancel_delete"),
    ("operators.batches", "check_outcome", "policy"),
    ("operators.batches", "total_counts", "policy"),
    ("operators.batches", "wait_for_batches", "waiting"),
    ("operators.batches", "DEFAULT_MAX_POLL_INTERVAL", "policy"),
    ("operators.batches", "DEFAULT_POLL_INTERVAL", "policy"),
    ("waiting", "DEFAULT_MAX_POLL_INTERVAL", "policy"),
    ("waiting", "DEFAULT_POLL_INTERVAL", "policy"),
    ("waiting", "DEFAULT_PROGRESS_INTERVAL", "policy"),
    ("triggers.batches", "parse_wait_event", "policy"),
    ("waiting", "WaitEvent", "policy"),
    ("waiting", "is_transient", "policy"),
    ("waiting", "COUNT_FIELDS", "models"),
    ("client_core", "RETRYABLE_STATUSES", "policy"),
    (TRANSFER, "RESULT_TYPES", "models"),
    (TRANSFER, "ResultsVerificationError", "transfers.verification"),
    (TRANSFER, "BatchLedger", "transfers.verification"),
    (TRANSFER, "TransferProgress", "transfers.writer"),
]


def _get(module: str, name: str) -> object:
    return getattr(importlib.import_module(f"airflow_provider_batches.{module}"), name)


@pytest.mark.parametrize(
    ("published", "name", "home"), MOVED, ids=[f"{path}.{name}" for path, name, _ in MOVED]
)
def test_a_moved_name_is_the_same_object_at_its_published_path(published: str, name: str, home: str) -> None:
    assert _get(published, name) is _get(home, name)
