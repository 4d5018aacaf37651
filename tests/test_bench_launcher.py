"""The benchmarks' minimal launcher reports its child's own peak RSS, not an inherited one.

Linux keeps ``ru_maxrss`` across exec, so a variant started straight from a large process would
report that process's peak; ``bench/launch.py`` is what keeps ``bench/results.md``'s memory honest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent.parent / "bench" / "launch.py"
MIB = 1024 * 1024


def test_a_child_started_by_the_launcher_reports_its_own_peak_not_its_large_parents(tmp_path: Path) -> None:
    held = bytearray(300 * MIB)  # the parent touches 300 MiB before starting the launcher
    held[::4096] = b"\x01" * len(range(0, len(held), 4096))
    result = tmp_path / "launch.json"
    subprocess.run(
        [sys.executable, "-I", "-S", str(LAUNCHER), str(result), sys.executable, "-I", "-S", "-c", "pass"],
        check=True,
    )
    reported = json.loads(result.read_text())
    assert reported["launcher_maxrss_kib"] * 1024 > 300 * MIB  # the launcher itself inherits it
    assert reported["child_maxrss_kib"] * 1024 < 50 * MIB  # its child does not
    del held


def test_the_launcher_reports_the_childs_exit_status_and_cpu(tmp_path: Path) -> None:
    result = tmp_path / "launch.json"
    busy = "import sys; sum(range(3_000_000)); sys.exit(3)"
    completed = subprocess.run(
        [sys.executable, "-I", "-S", str(LAUNCHER), str(result), sys.executable, "-I", "-S", "-c", busy]
    )
    reported = json.loads(result.read_text())
    assert completed.returncode == 3
    assert reported["exit"] == 3
    assert reported["child_cpu"] > 0
