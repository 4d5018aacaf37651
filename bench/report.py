"""Tables: printed per scenario and written to ``bench/results.md`` with the machine's description."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

RESULTS_PATH = Path(__file__).resolve().parent / "results.md"


@dataclass
class Table:
    """One scenario's result: a table, its targets (text, verdict) and notes."""

    title: str
    description: str
    columns: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    targets: list[tuple[str, str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, text: str, measured: str, ok: bool) -> None:
        self.targets.append((text, measured, ok))

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", self.description, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.targets:
            lines += ["", "| target | measured | verdict |", "|---|---|---|"]
            lines += [
                f"| {text} | {measured} | {'PASS' if ok else 'MISS'} |" for text, measured, ok in self.targets
            ]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        widths = [len(column) for column in self.columns]
        for row in self.rows:
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

        def render(cells: Sequence[str]) -> str:
            return "  ".join(
                cell.ljust(width) if index == 0 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )

        lines = ["", f"== {self.title}", self.description, render(self.columns)]
        lines.append("  ".join("-" * width for width in widths))
        lines += [render(row) for row in self.rows]
        for text, measured, ok in self.targets:
            lines.append(f"  [{'PASS' if ok else 'MISS'}] {text}: {measured}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_description() -> list[str]:
    cpu_model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 1024**3
    return [
        f"- date: {_now()}",
        f"- machine: `nproc` = {os.cpu_count()}, {cpu_model}, {memory:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.implementation.name}), "
        f"Airflow {_version('apache-airflow')}, "
        f"airflow-provider-batches {_version('airflow-provider-batches')}, "
        f"apache-airflow-providers-anthropic {_version('apache-airflow-providers-anthropic')} "
        f"(anthropic SDK {_version('anthropic')}), httpx {_version('httpx')}, uvicorn {_version('uvicorn')}",
        "- the emulator runs as a separate process on 127.0.0.1 (same 2 cores); every variant runs in its "
        "own fresh Python process",
    ]


def _git(*args: str) -> str:
    """What ``git args`` prints in the checkout the results are written to."""
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=RESULTS_PATH.parent
    ).stdout.strip()


def commit_description() -> str:
    """The commit measured, and whether the work tree differed from it."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}{' with uncommitted changes' if dirty else ''}"


def write_results(
    tables: Sequence[Table],
    *,
    command: str,
    summary: Sequence[str],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    quick: bool,
    commit: str,
) -> Path:
    """All of ``results.md`` from this one run: nothing is kept from earlier runs."""
    start, end = load
    mode = (
        "**QUICK mode** (`BENCH_QUICK=1` / `--quick`): shortened sizes and intervals, a smoke run; its "
        "figures are not the full benchmark's"
        if quick
        else "full mode"
    )
    parts = [
        "# Benchmarks",
        "",
        f"Produced by one run of `{command}` ({mode}); every figure below was measured in this run. "
        "CPU is each variant's own `getrusage` over the measured work (not interpreter start-up or "
        "imports); wall is the same span. Peak RSS is the whole variant process's, reported by a minimal "
        "launcher (`bench/launch.py`) from `wait4` of its only child.",
        "",
        *machine_description(),
        f"- commit: {commit} (at the start of the run)",
        f"- load average (1/5/15 min) at the start: {start[0]:.2f} / {start[1]:.2f} / {start[2]:.2f}; "
        f"at the end: {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f} (on {os.cpu_count()} CPUs). "
        + (
            "The machine was loaded by other work: wall-clock figures are not representative; CPU figures "
            "and CPU ratios carry over better."
            if max(*start, *end) > 0.5 * (os.cpu_count() or 1)
            else "The machine was otherwise quiet."
        ),
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## Results",
        "",
    ]
    parts += [table.markdown() for table in tables]
    RESULTS_PATH.write_text("\n".join(parts))
    return RESULTS_PATH


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
