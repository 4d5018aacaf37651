"""``python -m airflow_provider_batches.emulator --port 0``."""

from __future__ import annotations

import sys

from airflow_provider_batches.emulator.cli import main

sys.exit(main())
