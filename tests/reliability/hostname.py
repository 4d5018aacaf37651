"""``[core] hostname_callable`` for the reliability clusters: each process names itself, so the test can
tell from the ``job`` table which triggerer holds which trigger (all of them run on one machine)."""

from __future__ import annotations

import os
import socket


def from_env() -> str:
    return os.environ.get("RELIABILITY_HOSTNAME") or socket.getfqdn()
