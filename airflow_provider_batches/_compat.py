"""Imports that moved between the Airflow 3.x releases this provider supports (3.1 to 3.3), and the one
way this provider's own moved names and renamed methods keep working: with a deprecation warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from airflow.exceptions import AirflowProviderDeprecationWarning

try:  # Airflow 3.2+
    from airflow.sdk import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
    )

try:  # Airflow 3.2+ (airflow.stats warns there, and the core-side airflow.observability is not the SDK's)
    from airflow.sdk.observability.stats import Stats
except ImportError:  # Airflow 3.1
    try:
        from airflow.stats import Stats  # type: ignore[no-redef,attr-defined,unused-ignore]
    except ImportError:  # metrics are optional: never fail a task for them
        Stats = None  # type: ignore[assignment,misc,unused-ignore]

#: The release that drops the deprecated paths below (Airflow's convention: say when, in the warning).
REMOVAL_VERSION = "1.0.0"


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``, naming the release that removes it."""
    warnings.warn(
        f"{old} is deprecated: use {new} instead; {old} will be removed in {REMOVAL_VERSION}",
        AirflowProviderDeprecationWarning,
        stacklevel=stacklevel,
    )


def moved_names(module: str, moves: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``module`` for names that moved out of it (``name -> new module``):
    importing one from the old path still works, with a warning naming its new home."""

    def __getattr__(name: str) -> Any:
        home = moves.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_deprecated(f"{module}.{name}", f"{home}.{name}")
        return getattr(importlib.import_module(home), name)

    return __getattr__


__all__ = [
    "REMOVAL_VERSION",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "Stats",
    "conf",
    "moved_names",
    "warn_deprecated",
]
