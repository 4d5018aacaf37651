"""Running one measured variant in a fresh subprocess, and what it reports back.

A variant is a function in :mod:`bench.variants`. ``run_variant`` starts the minimal launcher
(:mod:`bench.launch`), which spawns ``python -m bench.variants <name> <params-json> <result-file>``
and reports the child's peak RSS and whole-process CPU from ``wait4`` (Linux keeps ``ru_maxrss``
across exec, so the variant must not be forked from this large process). The child times only the
work (CPU from its own ``getrusage`` first, then wall) and writes one JSON object to the result file.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.emulator import EmulatorProcess

MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    """One run of one variant."""

    variant: str
    wall: float
    cpu: float
    peak_rss: int
    emulator_cpu: float = 0.0
    #: CPU of the whole child process (start-up and imports included), from the launcher's wait4.
    process_cpu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss / MIB


class Timer:
    """Wall and CPU time (user + system, all threads) of a block, inside the variant process."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    @contextmanager
    def measure(self) -> Iterator[Timer]:
        cpu, wall = _cpu(), time.perf_counter()
        try:
            yield self
        finally:
            self.cpu = _cpu() - cpu
            self.wall = time.perf_counter() - wall


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_variant(
    name: str,
    params: Mapping[str, Any],
    *,
    label: str | None = None,
    env: Mapping[str, str] | None = None,
    emulator: EmulatorProcess | None = None,
    timeout: float = 900,
) -> Measurement:
    """Run ``bench.variants.<name>(**params)`` in a fresh interpreter and collect its measurement."""
    with tempfile.NamedTemporaryFile(prefix="bench-result-", suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    launch_path = result_path.with_suffix(".launch.json")
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    child_env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    command = [
        sys.executable,
        "-I",
        "-S",
        str(REPO_ROOT / "bench" / "launch.py"),
        str(launch_path),
        sys.executable,
        "-m",
        "bench.variants",
        name,
        json.dumps(dict(params)),
        str(result_path),
    ]
    emulator_cpu = emulator.cpu_seconds() if emulator is not None else 0.0
    try:
        completed = subprocess.run(
            command, env=child_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
        )
        if completed.returncode != 0:
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
            raise RuntimeError(f"variant {name} failed (exit {completed.returncode}):\n{tail}")
        data = json.loads(result_path.read_text())
        launched = json.loads(launch_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
        launch_path.unlink(missing_ok=True)
    if emulator is not None:
        emulator_cpu = emulator.cpu_seconds() - emulator_cpu
    return Measurement(
        variant=label or name,
        wall=data.pop("wall"),
        cpu=data.pop("cpu"),
        peak_rss=launched["child_maxrss_kib"] * 1024,
        emulator_cpu=emulator_cpu,
        process_cpu=launched["child_cpu"],
        extra=data,
    )


def child_main(variants: Mapping[str, Callable[..., dict[str, Any]]]) -> None:
    """Entry point of the variant subprocess: ``<name> <params-json> <result-file>``."""
    name, params, result_file = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    result = variants[name](**params)
    result_file.write_text(json.dumps(result))
