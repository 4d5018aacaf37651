"""Imports that moved between the Airflow 3.x releases this provider supports (3.1 to 3.3)."""

from __future__ import annotations

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

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "Stats",
    "conf",
]
