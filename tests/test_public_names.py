"""Names users' DAGs import keep working from the paths they were published at, after any move: the
documented paths silently, the others with a deprecation warning that names the new home and the
release that removes the old path."""

from __future__ import annotations

import importlib
import warnings

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_batches._compat import REMOVAL_VERSION

TRANSFER = "transfers.results_to_object_storage"
# (old module, name, the module it lives in now), relative to airflow_provider_batches
MOVED = [
    ("hooks.anthropic", "BatchBody", "bodies"),
    ("operators.batches", "cancel_if_running", "operators.cancel_delete"),
    ("operators.batches", "cancel_batches", "operators.cancel_delete"),
    ("operators.batches", "check_outcome", "policy"),
    ("operators.batches", "total_counts", "policy"),
    ("operators.batches", "describe_counts", "policy"),
    ("operators.batches", "default_deferrable", "policy"),
    ("operators.batches", "wait_for_batches", "waiting"),
    ("operators.batches", "DEFAULT_MAX_POLL_INTERVAL", "policy"),
    ("operators.batches", "DEFAULT_POLL_INTERVAL", "policy"),
    ("operators.batches", "DEFAULT_TIMEOUT", "waiting"),
    ("operators.batches", "DEFER_TIMEOUT_MARGIN_SECONDS", "waiting"),
    ("operators.batches", "job_manifest", "operators.manifest"),
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
    ("client_core", "LineSplitter", "result_lines"),
    # defined in the old module before the move (client_settings, manifest): found by review23
    ("client_core", "DEFAULT_MAX_REQUESTS_PER_MINUTE", "client_settings"),
    ("operators.rounds", "rounds_manifest", "operators.manifest"),
    # imported into the old module, and so importable from it, before the move
    ("hooks.anthropic", "BatchNotReadyError", "errors"),
    ("hooks.anthropic", "DEFAULT_ANTHROPIC_VERSION", "client_settings"),
    ("hooks.anthropic", "DEFAULT_MAX_REQUESTS_PER_MINUTE", "client_settings"),
    ("operators.batches", "BatchQueueFullError", "errors"),
    ("operators.batches", "BatchTimeoutError", "errors"),
    ("operators.batches", "DEFAULT_PROGRESS_INTERVAL", "policy"),
    ("client_core", "ForeignResultsURLError", "errors"),
    ("waiting", "raise_for_wait_event", "policy"),
    ("operators.cancel_delete", "wait_for_batches", "waiting"),
]
# Published at both paths on purpose: the README and DESIGN name operators.batches for them.
DOCUMENTED = [
    ("operators.batches", "AnthropicCancelBatchOperator", "operators.cancel_delete"),
    ("operators.batches", "AnthropicDeleteBatchOperator", "operators.cancel_delete"),
]


def _module(path: str) -> object:
    return importlib.import_module(f"airflow_provider_batches.{path}")


@pytest.mark.parametrize(("old", "name", "home"), MOVED, ids=[f"{path}.{name}" for path, name, _ in MOVED])
def test_a_moved_name_still_imports_from_its_old_path_with_a_warning_naming_its_new_home(
    old: str, name: str, home: str
) -> None:
    with pytest.warns(AirflowProviderDeprecationWarning) as caught:
        found = getattr(_module(old), name)

    assert found is getattr(_module(home), name)
    (warning,) = caught
    message = str(warning.message)
    assert f"airflow_provider_batches.{home}.{name}" in message
    assert f"will be removed in {REMOVAL_VERSION}" in message
    assert warning.filename == __file__  # it points at the importing line, not the package


@pytest.mark.parametrize(("old", "name", "home"), MOVED, ids=[f"{path}.{name}" for path, name, _ in MOVED])
def test_a_moved_name_is_not_kept_in_its_old_module(old: str, name: str, home: str) -> None:
    """Only the warning path serves it: a plain global of the old module would be read silently."""
    assert name not in vars(_module(old))
    assert name not in getattr(_module(old), "__all__", ())


def test_a_from_import_of_a_moved_name_warns_too() -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match=r"waiting\.is_transient is deprecated"):
        from airflow_provider_batches.waiting import is_transient  # noqa: F401


def test_an_unknown_name_of_an_old_module_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _module("waiting").no_such_name  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize(
    ("published", "name", "home"), DOCUMENTED, ids=[f"{path}.{name}" for path, name, _ in DOCUMENTED]
)
def test_a_documented_second_path_imports_without_a_warning(published: str, name: str, home: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = getattr(_module(published), name)

    assert found is getattr(_module(home), name)


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
    assert getattr(_module("requests"), name) is getattr(_module(f"requests.{home}"), name)
    assert name in _module("requests").__all__  # type: ignore[attr-defined]
