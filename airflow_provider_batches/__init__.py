"""Apache Airflow provider for the Anthropic Message Batches API."""

from __future__ import annotations

__version__ = "0.1.0"
