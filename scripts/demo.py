"""``make demo``: the example pipeline end to end, against the bundled emulator by default.

Starts the emulator, writes a small requests file, runs ``anthropic_batch_pipeline`` with
``airflow dags test`` on a fresh SQLite metadata DB, stops the emulator and prints what a user
wants to see. ``--real`` runs the same pipeline against the real API (needs ANTHROPIC_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_provider_batches.emulator import Emulator, EmulatorConfig  # noqa: E402
from airflow_provider_batches.testing import connection_json  # noqa: E402
from tests.airflow_harness import AirflowEnv  # noqa: E402

DAG_ID = "anthropic_batch_pipeline"
DAG_FILE = ROOT / "example_dags" / "anthropic_batch_pipeline.py"
TOPICS = ["photosynthesis", "binary search", "the French revolution", "TCP handshakes", "compound interest"]


def write_requests(path: Path, count: int, model: str) -> None:
    """A small job; with the emulator, a few requests fail transiently on their first attempt (overloaded,
    or expired), as real jobs do: the create task re-drives them as a second round."""
    with path.open("w") as out:
        for index in range(count):
            prompt = f"In two sentences, explain {TOPICS[index % len(TOPICS)]} (variant {index})."
            if index % 25 == 7:
                prompt += " [emulator:errored_once=overloaded_error]"
            elif index % 25 == 19:
                prompt += " [emulator:expired_once]"
            params = {"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": prompt}]}
            out.write(json.dumps({"custom_id": f"question-{index:04d}", "params": params}) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", action="store_true", help="use the real API (needs ANTHROPIC_API_KEY)")
    parser.add_argument("--requests", type=int, default=100, help="number of requests to send")
    parser.add_argument("--model", default="claude-haiku-4-5")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    parser.add_argument("--output", type=Path, default=ROOT / "demo-output", help="where results land")
    args = parser.parse_args()
    if args.real and not os.environ.get("ANTHROPIC_API_KEY"):
        parser.error("--real needs ANTHROPIC_API_KEY in the environment")

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    args.output.mkdir(parents=True, exist_ok=True)
    requests_file = args.workdir / "requests.jsonl"
    write_requests(requests_file, args.requests, args.model)

    with ExitStack() as stack:
        if args.real:
            connection = json.dumps(
                {"conn_type": "anthropic_batches", "password": os.environ["ANTHROPIC_API_KEY"]}
            )
            where = "the real Anthropic API"
        else:
            emulator = stack.enter_context(Emulator(EmulatorConfig(processing_seconds=4)))
            connection = connection_json(emulator)
            where = f"the emulator at {emulator.base_url}"
        print(f"Running {DAG_ID} on {args.requests} requests against {where} ...", flush=True)
        airflow = AirflowEnv(args.workdir / "airflow-home")
        airflow.migrate()
        conf = {
            "requests_path": f"file://{requests_file}",
            "destination": f"file://{args.output.resolve()}/",
            "max_cost_usd": 5.0,
        }
        run = airflow.dags_test(DAG_ID, DAG_FILE, conf=conf, AIRFLOW_CONN_ANTHROPIC_DEFAULT=connection)
    (args.workdir / "dags-test.log").write_text(run.output)
    return report(run, args.workdir / "dags-test.log")


_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT")


def failure_causes(output: str) -> dict[str, str]:
    """The exception that ended each failed task, read from ``airflow dags test`` output.

    A task's traceback ends with its exception line (``module.Error: message``), possibly followed
    by indented lines of the same message; of chained exceptions the last, the one raised, is kept.
    """
    causes: dict[str, str] = {}
    task = "a task"
    lines = output.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if started := _TASK_START.search(line):
            task = started.group(1)
        elif line.startswith("Traceback (most recent call last):"):
            index += 1
            while index < len(lines) and (lines[index].startswith(" ") or not lines[index]):
                index += 1  # the frames
            message = lines[index : index + 1]
            index += 1
            while index < len(lines) and lines[index].startswith("  ") and not _LOG_LINE.match(lines[index]):
                message.append(lines[index])
                index += 1
            if message:
                causes[task] = "\n  ".join(message)
            continue
        index += 1
    return causes


def report(run: Any, log_path: Path) -> int:
    states = run.task_states()
    print(f"\nDAG run {run.run_id}: {run.state}")
    for task_id, state in states.items():
        print(f"  {task_id:<22} {state}")
    if run.state != "success":
        causes = failure_causes(run.output)
        for task_id, cause in causes.items():
            print(f"\n{task_id} failed:\n  {cause}")
        if not causes:
            print("\nNo task logged an exception (see the log for what stopped the run).")
        print(f"\nThe run did not succeed; the full log is in {log_path}")
        return 1
    count = run.xcom("count_tokens")
    created = run.xcom("create_batch")
    exported = run.xcom("results_to_storage")
    summary = run.xcom("summarize")
    cost = count["estimated_cost_usd"]
    print(f"\nBatches:            {', '.join(created['batch_ids'])}")
    print(f"Requests:           {created['request_count']}")
    for entry in created.get("rounds", []):
        print(
            f"  round {entry['round']}: {entry['request_count']} request(s) sent, "
            f"{json.dumps(entry['request_counts'])}, re-driven {json.dumps(entry['redriven'])}"
        )
    print(f"Input tokens:       {count['input_tokens']:,}")
    if cost:
        print(f"Estimated cost:     ${cost['input']:.4f} input + at most ${cost['output_max']:.4f} output")
    print(f"Results per type:   {json.dumps(summary['counts'])} (final, after re-drive)")
    spend = exported["spend"]
    estimate = f"estimated at most ${cost['total_max']:.4f}, " if cost else ""
    print(f"Cost:               {estimate}actually ${spend['cost_usd']:.4f}")
    print(f"Results landed in:  {exported['destination']}")
    for entry in exported["files"]:
        print(f"  {entry['uri']}  ({entry['bytes']:,} bytes, {entry['results']} results)")
    print(f"Stop reasons:       {json.dumps(summary['stop_reasons'])}")
    print(f"First answer:       {summary['first_answer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
