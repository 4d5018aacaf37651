"""``python -m bench [--quick] [--only NAMES] [--scenario N ...] [--repeat R] [--no-write]``.

A run of every scenario writes all of ``bench/results.md``; ``--quick`` (or ``BENCH_QUICK=1``) is a
shortened smoke run, labelled as such. ``--only export,create`` (names or numbers, see ``--list``) or
``--scenario N`` runs some scenarios: it prints their tables and writes nothing, so a results file
never stitches runs together. A scenario that fails is reported as failed (its traceback printed) and
the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback

from bench.measure import MIB, run_variant
from bench.report import Table, commit_description, write_results
from bench.scenarios import SCENARIO_NAMES, SCENARIOS, Context, Sizes


def selected_scenarios(only: str | None, numbers: list[int] | None) -> list[int]:
    """The scenarios to run, in their order: ``--only`` names or numbers (comma-separated) and
    ``--scenario`` numbers; every scenario when neither is given."""
    chosen = set(numbers or [])
    for word in filter(None, (part.strip().lower() for part in (only or "").split(","))):
        if word.isdigit() and int(word) in SCENARIOS:
            chosen.add(int(word))
        elif word in SCENARIO_NAMES:
            chosen.update(SCENARIO_NAMES[word])
        else:
            known = ", ".join(SCENARIO_NAMES)
            raise SystemExit(f"--only: unknown scenario {word!r}; known: {known} (or 1-{max(SCENARIOS)})")
    return sorted(chosen) if chosen else sorted(SCENARIOS)


def failed_table(number: int, error: BaseException) -> Table:
    """What a scenario that raised leaves in the report: its error, and a missed target."""
    table = Table(f"{number}. {SCENARIOS[number].__name__} (FAILED)", "The scenario raised.", ["error"])
    lines = str(error).strip().splitlines() or [""]
    said = lines[0] + (f" ... {lines[-1].strip()}" if len(lines) > 1 else "")  # a variant's last error line
    table.rows.append([f"{type(error).__name__}: {said}".replace("|", "/")[:300]])
    table.target("the scenario runs to its end", "failed", False)
    return table


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
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated scenario names or numbers, e.g. export,create (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and their names, then exit")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds of the variants of scenarios 1, 2, 5 and 6 (median reported); default 3",
    )
    parser.add_argument(
        "--export-sizes",
        metavar="N[,M]",
        help="shortened export sizes (results), e.g. 20000,200000, labelled as shortened; implies --no-write",
    )
    parser.add_argument(
        "--export-batch",
        type=int,
        metavar="N",
        help="requests per export batch with --export-sizes (default 100000)",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="do not write bench/results.md (a --scenario run never writes it)",
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, numbers in SCENARIO_NAMES.items():
            print(f"{name}: " + ", ".join(f"{n}. {SCENARIOS[n].__name__}" for n in numbers))
        return 0
    chosen = selected_scenarios(args.only, args.scenario)
    partial = chosen != sorted(SCENARIOS)

    sizes = Sizes.quick() if args.quick else Sizes()
    if args.repeat:
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
    if args.export_sizes:
        export = tuple(int(part) for part in args.export_sizes.split(","))
        batch = args.export_batch or min(sizes.export_batch_requests, *export)
        sizes = dataclasses.replace(sizes, export_results=export, export_batch_requests=batch)
        args.no_write = True
    load_start = os.getloadavg()
    commit = commit_description()
    print(f"load average at the start: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}")
    started = time.monotonic()
    floor = run_variant("import_airflow", {})
    print(f"bare `import airflow` process: peak RSS {floor.peak_rss / MIB:,.0f} MiB")
    ctx = Context(sizes=sizes, airflow_rss=floor.peak_rss)
    tables: list[Table] = []
    for number in chosen:
        try:
            table = SCENARIOS[number](ctx)
        except Exception as error:  # the other scenarios still run; the report says this one failed
            traceback.print_exc()
            table = failed_table(number, error)
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
    if not args.no_write and not partial:
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
