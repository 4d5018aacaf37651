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
    ("requests", "CUSTOM_ID_PATTERN", "batch_ids"),
]


def _get(module: str, name: str) -> object:
    return getattr(importlib.import_module(f"airflow_provider_batches.{module}"), name)


@pytest.mark.parametrize(
    ("published", "name", "home"), MOVED, ids=[f"{path}.{name}" for path, name, _ in MOVED]
)
def test_a_moved_name_is_the_same_object_at_its_published_path(published: str, name: str, home: str) -> None:
    assert _get(published, name) is _get(home, name)


#: Every public name ``airflow_provider_batches.requests`` had as one module, and the module of the
#: ``requests`` package that is its home now.
REQUESTS_NAMES = {
    "BODY_CHUNK_BYTES": "limits",
    "MAX_BATCH_BYTES": "limits",
    "MAX_LINE_BYTES": "limits",
    "MAX_REQUESTS_PER_BATCH": "limits",
    "READ_CHUNK_BYTES": "limits",
    "EXPANSION_FREE_BYTES": "reading",
    "MAX_EXPANSION_RATIO": "reading",
    "BoundedGzip": "reading",
    "ExpansionBoundError": "reading",
    "SourceLine": "reading",
    "RequestSource": "sources",
    "MAX_NESTING_DEPTH": "validation",
    "MAX_REPORTED_PROBLEMS": "validation",
    "UNIQUE_KEY_BITS": "validation",
    "Checked": "validation",
    "RequestChecker": "validation",
    "BatchSlice": "slicing",
    "MODEL_LINES_SHOWN": "jobs",
    "ModelUsage": "jobs",
    "PreparedJob": "jobs",
    "prepare_job": "jobs",
}


@pytest.mark.parametrize(("name", "home"), sorted(REQUESTS_NAMES.items()))
def test_a_name_of_the_requests_module_is_exported_by_the_package_from_its_home(name: str, home: str) -> None:
    assert _get("requests", name) is _get(f"requests.{home}", name)
    assert name in _get("requests", "__all__")  # type: ignore[operator]
