"""``python -m bench [--quick] [--scenario N ...] [--repeat R] [--no-write]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from bench.measure import MIB, run_variant
from bench.report import Table, update_results, write_results
from bench.scenarios import SCENARIOS, Context, Sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few minutes")
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
        help="do not write bench/results.md (a --scenario run replaces only its own sections)",
    )
    args = parser.parse_args(argv)

    sizes = Sizes.quick() if args.quick else Sizes()
    if args.repeat:
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
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
    if not args.no_write and not args.quick and not args.scenario:
        path = write_results(tables, command="python -m bench", summary=summary)
        print(f"wrote {path}")
    elif not args.no_write and not args.quick:
        command = "python -m bench " + " ".join(f"--scenario {n}" for n in args.scenario)
        path = update_results(tables, command=command + (f" --repeat {args.repeat}" if args.repeat else ""))
        print(f"updated these scenarios in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
