"""Tables: printed per scenario and written to ``bench/results.md`` with the machine's description."""

from __future__ import annotations

import datetime
import os
import platform
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


FINDINGS_HEADING = "## Findings"


def _kept_findings() -> str:
    """The hand-written analysis at the end of the previous results.md, kept across runs (re-check it)."""
    if not RESULTS_PATH.exists():
        return ""
    previous = RESULTS_PATH.read_text()
    start = previous.find(FINDINGS_HEADING)
    return previous[start:] if start >= 0 else ""


def write_results(tables: Sequence[Table], *, command: str, summary: Sequence[str]) -> Path:
    parts = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` (`make bench`). Numbers are noisy; the ratios are what count. "
        "Wall and CPU time cover the measured work only (not interpreter start-up or imports); "
        "peak RSS is the whole variant process's (imports included), from `getrusage`.",
        "",
        *machine_description(),
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## Results",
        "",
    ]
    parts += [table.markdown() for table in tables]
    parts.append(_kept_findings())
    RESULTS_PATH.write_text("\n".join(parts))
    return RESULTS_PATH


def update_results(tables: Sequence[Table], *, command: str) -> Path:
    """Replace only these scenarios' sections (and their summary rows) in ``results.md``, keeping the
    others and the findings: a partial run (``--scenario N``) updates what it measured, saying when."""
    text = RESULTS_PATH.read_text()
    for table in tables:
        section = table.markdown() + f"\n_Measured {_now()} by `{command}`._\n"
        start = text.find(f"### {table.title}")
        if start < 0:
            start = text.find(FINDINGS_HEADING)
            text = text[:start] + section + "\n" + text[start:]
        else:
            ends = [i for i in (text.find("\n### ", start + 4), text.find(FINDINGS_HEADING, start)) if i >= 0]
            end = min(ends) if ends else len(text)
            text = text[:start] + section + "\n" + text[end:].lstrip("\n")
        rows = [f"| {table.title} | {t} | {m} | {'PASS' if ok else 'MISS'} |" for t, m, ok in table.targets]
        lines = [line for line in text.split("\n") if not line.startswith(f"| {table.title} |")]
        header = lines.index("| scenario | target | measured | verdict |") + 2
        tail = header
        while tail < len(lines) and lines[tail].startswith("|"):
            tail += 1
        lines[tail:tail] = rows
        text = "\n".join(lines)
    RESULTS_PATH.write_text(text)
    return RESULTS_PATH


def _now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
