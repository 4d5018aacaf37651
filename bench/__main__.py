"""``python -m bench [--quick] [--scenario N ...] [--repeat R] [--no-write]``.

A run of every scenario writes all of ``bench/results.md``; ``--quick`` (or ``BENCH_QUICK=1``) is a
shortened smoke run, labelled as such. A ``--scenario`` run prints its tables and writes nothing: a
results file never stitches runs together.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from bench.measure import MIB, run_variant
from bench.report import Table, commit_description, write_results
from bench.scenarios import SCENARIOS, Context, Sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small sizes: a smoke run of a few minutes (also BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--scenario",
        type=int,
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--repeat", type=int, help="runs per variant in scenarios 1 and 2 (median reported)")
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="do not write bench/results.md (a --scenario run never writes it)",
    )
    args = parser.parse_args(argv)

    sizes = Sizes.quick() if args.quick else Sizes()
    if args.repeat:
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
    load_start = os.getloadavg()
    commit = commit_description()
    print(f"load average at the start: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}")
    started = time.monotonic()
    floor = run_variant("import_airflow", {})
    print(f"bare `import airflow` process: peak RSS {floor.peak_rss / MIB:,.0f} MiB")
    ctx = Context(sizes=sizes, airflow_rss=floor.peak_rss)
    tables: list[Table] = []
    for number in args.scenario or sorted(SCENARIOS):
        table = SCENARIOS[number](ctx)
        print(table.text(), flush=True)
        tables.append(table)
    elapsed = time.monotonic() - started
    verdicts = [(table.title, text, measured, ok) for table in tables for text, measured, ok in table.targets]
    summary = [
        f"Memory floor: a bare `import airflow` process peaks at {floor.peak_rss / MIB:,.0f} MiB. "
        f"Whole run: {elapsed / 60:.1f} min.",
        "",
        "| scenario | target | measured | verdict |",
        "|---|---|---|---|",
        *[
            f"| {title} | {text} | {measured} | {'PASS' if ok else 'MISS'} |"
            for title, text, measured, ok in verdicts
        ],
    ]
    print(f"\nbench finished in {elapsed / 60:.1f} min")
    for title, text, measured, ok in verdicts:
        print(f"  [{'PASS' if ok else 'MISS'}] {title}: {text}: {measured}")
    load_end = os.getloadavg()
    print(f"load average at the end: {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f}")
    if not args.no_write and not args.scenario:
        command = "python -m bench" + (" --quick" if args.quick else "")
        command += f" --repeat {args.repeat}" if args.repeat else ""
        path = write_results(
            tables,
            command=command,
            summary=summary,
            load=(load_start, load_end),
            quick=args.quick,
            commit=commit,
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
