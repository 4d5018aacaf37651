"""The four scenarios of ``make bench``: set-up, the variants (each in its own process), the table."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_batches.client_settings import DEFAULT_MAX_REQUESTS_PER_MINUTE
from airflow_provider_batches.identity import digest_of
from airflow_provider_batches.policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    SWEEP_BUDGET_SHARE,
    SWEEP_INTERVAL,
)
from bench.data import RequestsFile, batch_body_files, body_file, requests_file
from bench.emulator import EmulatorProcess
from bench.measure import MIB, Measurement, run_variant
from bench.report import Table
from bench.s3 import AWS_CONN_ID, MotoProcess

RSS_BUDGET_MIB = 100
LOG = print
#: Said in a table whose vendor rows are left out (``make bench`` installs the provider: the bench extra).
VENDOR_MISSING = (
    "The vendor provider (apache-airflow-providers-anthropic) is not installed here: its rows are left "
    "out (`make bench` installs it with the bench extra)."
)


def vendor_installed() -> bool:
    """Whether the vendor provider can be measured (a contributor's venv may not have the bench extra)."""
    return importlib.util.find_spec("airflow.providers.anthropic") is not None


@dataclass(frozen=True)
class Sizes:
    results_requests: int = 100_000
    export_results: tuple[int, ...] = (100_000, 1_000_000)
    export_batch_requests: int = 100_000
    create_requests: int = 100_000
    repeat: int = 3
    wait_counts: tuple[int, ...] = (1000, 5000)
    wait_limits: tuple[int, ...] = (0, 50)
    #: 1: the real defaults (the long mode, minutes a run); more: every interval shortened as much.
    wait_time_scale: float = 1.0
    #: Seconds from the creates to the first batch's end (the triggers start in between) ...
    wait_lead: float = 20.0
    #: ... over which the ends are spread uniformly (every phase of a poll cadence sampled) ...
    wait_window: float = 60.0
    #: ... and after the last end, how long events are still awaited (the vendor polls every 60 s).
    wait_max_wait: float = 65.0
    count_requests: int = 10_000
    count_rpm: int = 6000
    scale_requests: tuple[int, int] = (100_000, 1_000_000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            results_requests=10_000,
            export_results=(100_000,),  # the export target's size: a few seconds a run
            export_batch_requests=100_000,
            create_requests=10_000,
            repeat=3,
            wait_counts=(100,),
            wait_limits=(0, 50),
            wait_time_scale=10.0,
            wait_lead=10.0,
            wait_window=15.0,
            wait_max_wait=10.0,
            count_requests=300,
            count_rpm=250,
            scale_requests=(2_000, 20_000),
        )


@dataclass
class Context:
    sizes: Sizes
    airflow_rss: int  # peak RSS of a bare ``import airflow`` process, measured in this run


def _mib(value: float) -> str:
    return f"{value / MIB:,.0f}"


def _median(runs: Sequence[Measurement]) -> Measurement:
    """Median wall and CPU over repeats; the highest peak RSS (memory budgets are about the worst run)."""
    return Measurement(
        variant=runs[0].variant,
        wall=statistics.median(run.wall for run in runs),
        cpu=statistics.median(run.cpu for run in runs),
        peak_rss=max(run.peak_rss for run in runs),
        emulator_cpu=statistics.median(run.emulator_cpu for run in runs),
        extra=runs[-1].extra,
    )


def _repeat(
    ctx: Context,
    variants: Sequence[tuple[str, str, dict[str, Any]]],
    emulator: EmulatorProcess,
    *,
    between: Callable[[], None] | None = None,
) -> dict[str, Measurement]:
    """Run the variants round-robin ``repeat`` times (noise spreads evenly); one median per variant."""
    env = {"AIRFLOW_CONN_ANTHROPIC_DEFAULT": emulator.connection_json}
    runs: dict[str, list[Measurement]] = {label: [] for label, _, _ in variants}
    for round_number in range(ctx.sizes.repeat):
        for label, name, params in variants:
            measurement = run_variant(name, params, label=label, env=env, emulator=emulator)
            LOG(
                f"   run {round_number + 1}/{ctx.sizes.repeat} {label}: {measurement.wall:.2f} s wall, "
                f"{measurement.cpu:.2f} s CPU, {measurement.peak_rss_mib:,.0f} MiB, "
                f"emulator {measurement.emulator_cpu:.2f} s CPU"
            )
            runs[label].append(measurement)
            if between is not None:
                between()
    return {label: _median(measured) for label, measured in runs.items()}


def _throughput_table(
    title: str,
    description: str,
    results: dict[str, Measurement],
    floor: str,
    ctx: Context,
    size: int,
) -> Table:
    table = Table(
        title,
        description,
        [
            "variant",
            "client CPU s",
            "wall s",
            "MB/s",
            "peak RSS MiB",
            "RSS over `import airflow` MiB",
            "emulator CPU s",
            "wall vs floor",
        ],
    )
    base = results[floor].wall
    for measurement in results.values():
        table.rows.append(
            [
                measurement.variant,
                f"{measurement.cpu:.2f}",
                f"{measurement.wall:.2f}",
                f"{size / 1e6 / measurement.wall:,.0f}",
                _mib(measurement.peak_rss),
                f"{(measurement.peak_rss - ctx.airflow_rss) / MIB:+,.0f}",
                f"{measurement.emulator_cpu:.2f}",
                f"{measurement.wall / base:.2f}x",
            ]
        )
    return table


# -- 1 -----------------------------------------------------------------------------------------------


EXPORT_FLOOR = "bare copy: httpx iter_bytes() to file"
EXPORT_S3_FLOOR = "bare copy: httpx iter_bytes() into a boto3 multipart upload"
EXPORT_VERIFY = "verify-every-line floor (hand-written)"
EXPORT_OURS = "ours: results transfer operator"
EXPORT_VENDOR = "vendor: stream_batch_results"
FILE, S3 = "file://", "S3 (moto)"
#: How the S3 verify-every-line floor writes (bench.variants.S3_WRITERS): boto3 multipart, 8 MiB parts,
#: at the SDK's default checksums (a CRC32 of each part, as ours sends under the same connection
#: defaults): the same work. See EXPORT_S3_WRITERS_NOTE.
EXPORT_S3_WRITER = "multipart"
#: Also measured in every run, beside it: the same floor without the CRC32 (its own row).
EXPORT_S3_WRITERS_SHOWN = ("multipart-nocrc",)
#: ``BENCH_S3_WRITERS=multipart,s3fs``: also measure the S3 floor's other ways of writing (one row each).
S3_WRITERS_ENV = "BENCH_S3_WRITERS"


def _export_batches(
    emulator: EmulatorProcess, results: int, per_batch: int
) -> tuple[list[dict[str, Any]], int, str]:
    """``results // per_batch`` ended batches of ``per_batch`` requests each (the API's limit is
    100,000 a batch): the same body created again, so each batch has its own ids and results file.
    Each results file is fetched once here (the emulator writes it; the page cache holds it). Also the
    digest of the custom_ids each batch holds, as the create operator records it for the job."""
    requests = requests_file(per_batch)
    body = body_file(requests)
    with requests.path.open("rb") as lines:
        digest = digest_of(json.loads(line)["custom_id"] for line in lines)
    batches, size = [], 0
    for number in range(max(1, results // per_batch)):
        created = emulator.create_batch_from_body(body)
        batch = emulator.get_batch(created["id"])
        size += emulator.download(batch["results_url"])
        batches.append(batch)
        LOG(f"   batch {number + 1}: {batch['id']}, {batch['request_counts']}")
    return batches, size, digest


def _job_manifest(batches: list[dict[str, Any]], digest: str) -> dict[str, Any]:
    """What the create operator returns for these batches (the ``batch_id`` a DAG passes the transfer):
    each batch's request count and custom_ids digest, which the transfer checks before publishing."""
    counts = [sum(batch["request_counts"].values()) for batch in batches]
    return {
        "batch_ids": [batch["id"] for batch in batches],
        "request_count": sum(counts),
        "batches": {
            batch["id"]: {"request_count": count, "custom_ids_digest": digest}
            for batch, count in zip(batches, counts, strict=True)
        },
    }


ExportPlan = list[tuple[str, str, str, dict[str, Any]]]  # (destination, label, variant, params)


def _export_plan(batches: list[dict[str, Any]], digest: str, smallest: bool) -> ExportPlan:
    """The variants run for one size, to file:// and to S3 (the vendor to file://, at the smallest
    size only: about 100 s per million results). Ours is given the job's manifest; the floors the
    job's custom_ids digest of each batch, which they check as ours does."""
    ids = [batch["id"] for batch in batches]
    urls = {"results_urls": [batch["results_url"] for batch in batches]}
    ours = {"batch_id": _job_manifest(batches, digest)}
    verify = {"batch_ids": ids, "digests": dict.fromkeys(ids, digest)}
    plan: ExportPlan = [
        (FILE, EXPORT_FLOOR, "results_raw_copy", urls),
        (FILE, EXPORT_VERIFY, "results_verify_floor", verify),
        (FILE, EXPORT_OURS, "results_ours", ours),
    ]
    if smallest and len(ids) == 1 and vendor_installed():
        plan.append((FILE, EXPORT_VENDOR, "results_vendor", {"batch_id": ids[0]}))
    plan += [
        (S3, EXPORT_S3_FLOOR, "results_raw_copy", {**urls, "s3_writer": EXPORT_S3_WRITER}),
        (S3, EXPORT_VERIFY, "results_verify_floor", {**verify, "s3_writer": EXPORT_S3_WRITER}),
    ]
    for writer in (*EXPORT_S3_WRITERS_SHOWN, *filter(None, os.environ.get(S3_WRITERS_ENV, "").split(","))):
        if writer != EXPORT_S3_WRITER:
            plan.append(
                (S3, _s3_floor_label(writer), "results_verify_floor", {**verify, "s3_writer": writer})
            )
    plan.append((S3, EXPORT_OURS, "results_ours", {**ours, "dest_conn_id": AWS_CONN_ID}))
    return plan


_S3_WRITER_NAMES = {
    "multipart": "boto3 multipart with CRC32",
    "multipart-nocrc": "boto3 multipart",
    "s3fs": "an s3fs file",
}


def _s3_floor_label(writer: str) -> str:
    return f"{EXPORT_VERIFY}, written by {_S3_WRITER_NAMES.get(writer, writer)}"


def results_export(ctx: Context) -> Table:
    """Results of 100,000 and 1,000,000 requests to local files and to S3: ours and the vendor's vs the
    floors."""
    sizes, per_batch = ctx.sizes.export_results, ctx.sizes.export_batch_requests
    runs: dict[tuple[int, str, str], list[Measurement]] = {}
    moto_cpu: dict[tuple[int, str], list[float]] = {}
    described: dict[int, tuple[int, int, int]] = {}  # results -> (batches, bytes, errored)
    made: list[str] = []  # what making each size's batches cost the emulator (set-up, not measured work)
    with (
        EmulatorProcess("--processing-seconds", "0", "--errored-fraction", "0.02") as emulator,
        MotoProcess() as moto,
        tempfile.TemporaryDirectory(prefix="bench-export-") as out_dir,
    ):
        env = {
            "AIRFLOW_CONN_ANTHROPIC_DEFAULT": emulator.connection_json,
            f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}": moto.connection_json,
        }
        plans: dict[int, ExportPlan] = {}
        for count in sizes:
            LOG(f"1. results export: {count:,} results; creating the batches in the emulator")
            cpu, wall = emulator.cpu_seconds(), time.monotonic()
            batches, size, digest = _export_batches(emulator, count, per_batch)
            made.append(
                f"the emulator made the {count:,} results (creates, bodies uploaded and read, results "
                f"written, each file fetched once) in {time.monotonic() - wall:,.0f} s wall and "
                f"{emulator.cpu_seconds() - cpu:,.1f} s of its CPU"
            )
            errored = sum(batch["request_counts"]["errored"] for batch in batches)
            described[count] = (len(batches), size, errored)
            plans[count] = _export_plan(batches, digest, count == min(sizes))
        for round_number in range(ctx.sizes.repeat):
            for count in sizes:
                for destination, label, name, params in plans[count]:
                    # A fresh, empty folder (or S3 prefix) per run, removed after: no run replaces
                    # another's files (a rename or truncation over an existing file costs extra on ext4).
                    run_name = (
                        f"run-{round_number}-{count}-{name}-{len(runs.get((count, destination, label), []))}"
                    )
                    if destination == S3:
                        run_dir = f"s3://{moto.bucket}/{run_name}"
                    else:
                        run_dir = str(Path(out_dir) / run_name)
                        Path(run_dir).mkdir()
                    moto_before = moto.cpu_seconds()
                    measurement = run_variant(
                        name,
                        {**params, "out_dir": run_dir},
                        label=label,
                        env=env,
                        emulator=emulator,
                        timeout=3600,
                    )
                    moto_used = moto.cpu_seconds() - moto_before
                    if destination == S3:
                        stored = moto.prefix_bytes(run_name)
                        moto.delete_prefix(run_name)
                        assert stored >= described[count][1] * 0.99, (stored, described[count])
                        moto_cpu.setdefault((count, label), []).append(moto_used)
                    else:
                        shutil.rmtree(run_dir)
                    LOG(
                        f"   run {round_number + 1}/{ctx.sizes.repeat} {count:,} {destination} {label}: "
                        f"{measurement.wall:.2f} s wall, {measurement.cpu:.2f} s CPU, "
                        f"{measurement.peak_rss_mib:,.0f} MiB, emulator {measurement.emulator_cpu:.2f} s CPU"
                        + (f", moto {moto_used:.2f} s CPU" if destination == S3 else "")
                    )
                    if name in ("results_ours", "results_verify_floor"):
                        assert measurement.extra["results"] == count, measurement.extra
                    runs.setdefault((count, destination, label), []).append(measurement)
    return _export_table(ctx, runs, moto_cpu, described, made)


def _export_table(
    ctx: Context,
    runs: dict[tuple[int, str, str], list[Measurement]],
    moto_cpu: dict[tuple[int, str], list[float]],
    described: dict[int, tuple[int, int, int]],
    made: list[str],
) -> Table:
    sizes = tuple(described)
    shortened = sizes != Sizes().export_results and sizes != Sizes.quick().export_results
    table = Table(
        "1. Results export" + (" (shortened sizes)" if shortened else ""),
        "Results of "
        + " and ".join(
            f"{count:,} requests ({batches} batch{'es' if batches > 1 else ''}, {size / 1e6:,.0f} MB, "
            f"{errored:,} errored)"
            for count, (batches, size, errored) in described.items()
        )
        + " from the emulator to local files (file://) and to S3 (moto's server on 127.0.0.1, "
        "reached through an Airflow `aws` connection). The operator is given the job's manifest, as a DAG "
        "passes `create.output`: it verifies every line (JSON, custom_id valid and unique, counts per type "
        "equal `request_counts`, the custom_ids digest equal to the job's), meters the tokens for the spend "
        "report, hashes (sha256), stages and publishes (on S3: a multipart upload to a staging key, then a "
        "server-side copy). The verify-every-line floor is the cheapest correct hand-written exporter doing "
        "the same checks, each with its cheapest technique: whole-line blocks from `iter_bytes()`, one "
        "msgspec `decode_lines` per block, one value per line, custom_ids valid (one regex per block) and "
        "in a set, counts against `request_counts`, the custom_ids digest against the job's, sha256, one "
        "write per block (no metering, no staging); the same checks (one function) to a local file or, to "
        "S3, into a boto3 multipart upload of 8 MiB parts per batch (see the note). The bare copy only "
        "streams the bytes. "
        f"{ctx.sizes.repeat} interleaved rounds, every variant in a fresh process; min / median / max. "
        "Client CPU (the variant's own getrusage over the work) is the figure that carries to the real API; "
        "wall shares two cores with the emulator and moto. The vendor's hook parses every line into SDK "
        f"objects: measured at {min(sizes):,} to file:// only.",
        [
            "results",
            "destination",
            "variant",
            "client CPU s",
            "median CPU vs verify floor",
            "wall s",
            "MB/s (median)",
            "peak RSS MiB (max, from the launcher)",
            "emulator CPU s (median)",
            "moto CPU s (median)",
            "process CPU s (median; start-up and imports too)",
        ],
    )
    for count in sizes:
        size = described[count][1]
        for destination in (FILE, S3):
            floor_cpu = statistics.median(run.cpu for run in runs[(count, destination, EXPORT_VERIFY)])
            labels = [label for (n, d, label) in runs if n == count and d == destination]
            for label in labels:
                measured = runs[(count, destination, label)]
                wall = statistics.median(run.wall for run in measured)
                moto = moto_cpu.get((count, label)) if destination == S3 else None
                table.rows.append(
                    [
                        f"{count:,}",
                        destination,
                        label,
                        _spread([run.cpu for run in measured]),
                        f"{statistics.median(run.cpu for run in measured) / floor_cpu:.2f}x",
                        _spread([run.wall for run in measured]),
                        f"{size / 1e6 / wall:,.0f}",
                        _mib(max(run.peak_rss for run in measured)),
                        f"{statistics.median(run.emulator_cpu for run in measured):.2f}",
                        f"{statistics.median(moto):.2f}" if moto else "-",
                        f"{statistics.median(run.process_cpu for run in measured):.2f}",
                    ]
                )
            ours = runs[(count, destination, EXPORT_OURS)]
            ratio = statistics.median(run.cpu for run in ours) / floor_cpu
            where, floor_where = ("", "") if destination == FILE else (", S3", " (S3)")
            table.target(
                f"ours, {count:,}{where}: client CPU within 1.2x of the verify-every-line floor{floor_where}",
                f"{ratio:.2f}x",
                ratio <= 1.2,
            )
            over = (max(run.peak_rss for run in ours) - ctx.airflow_rss) / MIB
            table.target(
                f"ours, {count:,}{where}: peak RSS within {RSS_BUDGET_MIB} MiB of `import airflow`",
                f"{over:+,.0f} MiB",
                over <= RSS_BUDGET_MIB,
            )
    table.notes += [f"Set-up, not measured: {text}." for text in made]
    nocrc = _s3_floor_label("multipart-nocrc")
    for count in sizes:
        if (count, S3, nocrc) in runs:
            ours_cpu = statistics.median(run.cpu for run in runs[(count, S3, EXPORT_OURS)])
            floor_cpu = statistics.median(run.cpu for run in runs[(count, S3, nocrc)])
            table.notes.append(
                f"Ours against the S3 floor without CRC32, {count:,} results: {ours_cpu / floor_cpu:.2f}x "
                "its client CPU (not a target: ours keeps the connection's checksums)."
            )
    table.notes += [S3_NOTE, EXPORT_S3_WRITERS_NOTE]
    if not vendor_installed():
        table.notes.append(VENDOR_MISSING)
    return table


EXPORT_S3_WRITERS_NOTE = (
    "The S3 verify floor writes by boto3 `upload_part` of 8 MiB parts (the blocks joined once a part) "
    "at the SDK's default checksums, a CRC32 of each part, which ours also sends under the same "
    "connection defaults: the same work. The row 'written by boto3 multipart' is the same floor without "
    "the CRC32 (`request_checksum_calculation=when_required`), measured in the same rounds; ours against "
    "it is in the 'ours against the S3 floor without CRC32' note. Measured while building it: an s3fs "
    "file opened 'wb' costs about twice boto3 multipart (0.65 / 0.90 s against 0.28 / 0.48 s at "
    "20,000 / 40,000 results); `BENCH_S3_WRITERS=s3fs` adds its row."
)
S3_NOTE = (
    "S3 rows: moto's server (`python -m moto.server`) is a separate process on the same two cores; its "
    "CPU per run (psutil, the 'moto CPU' column) is apart from the client's, and on real S3 it is "
    "Amazon's. Each run writes under its own fresh prefix of one bucket made before the runs; the "
    "prefix is checked (bytes stored) and deleted after the run, not measured. Every variant imports "
    "its libraries before the measured work (ours: the operator, s3fs and the Amazon provider's "
    "filesystem; the floors: httpx, msgspec, boto3); making the S3 client (ours: through the Airflow "
    "connection) is measured. The process CPU column is the whole variant process's, imports included. "
    "Ours costs moto about twice the floor's CPU, and so wall on these two cores: it publishes each "
    "staged object by a server-side copy (no client bytes; on real S3, Amazon's work). Ours keeps the "
    "connection's checksum settings (botocore's default: a CRC32 of each part), as the S3 verify floor does."
)


# -- 2 -----------------------------------------------------------------------------------------------


CREATE_OURS = "ours: operator execute()"
CREATE_VALIDATE = "validate-then-upload floor (hand-written)"


def batch_creation(ctx: Context) -> Table:
    source = requests_file(ctx.sizes.create_requests)
    body = body_file(source)
    LOG(f"2. batch creation: {source.requests:,} requests, {source.size / 1e6:,.0f} MB JSONL")
    # Batches stay in_progress (no results written behind the next run's back) and are dropped after each run.
    variants: list[tuple[str, str, dict[str, Any]]] = [
        ("httpx streaming upload (floor)", "create_raw_upload", {"body_path": str(body)}),
        (CREATE_VALIDATE, "create_validate_floor", {"requests_path": str(source.path)}),
        (CREATE_OURS, "create_operator", {"requests_path": str(source.path)}),
    ]
    if vendor_installed():
        variants.append(
            ("vendor: json list + create_batch", "create_vendor", {"requests_path": str(source.path)})
        )
    with EmulatorProcess("--processing-seconds", "86400") as emulator:
        results = _repeat(
            ctx,
            variants,
            emulator,
            between=lambda: emulator.reset(batches=True),
        )
    floor, ours = results["httpx streaming upload (floor)"], results[CREATE_OURS]
    table = _throughput_table(
        "2. Batch creation",
        f"{source.requests:,} requests, {source.size / 1e6:,.0f} MB JSONL file, one batch. Ours is the "
        "create operator's real `execute()` (validation, job record in a task-state store, re-attach check, "
        f"watermark, paid create, manifest; no waiting). The validate-then-upload floor checks every line "
        "by hand (full decode, envelope, custom_id valid and unique, no repeated key, model, max_tokens, "
        f"messages) and then streams the body. Median of {ctx.sizes.repeat} interleaved runs, each in a "
        "fresh process. Client CPU is the figure that carries over to the real API: the wall mostly "
        "measures the emulator parsing the body on the same cores ('emulator CPU s').",
        results,
        "httpx streaming upload (floor)",
        ctx,
        source.size,
    )
    for measurement in results.values():
        assert measurement.extra["requests"] == source.requests, measurement
    validate = results[CREATE_VALIDATE]
    ratio = ours.cpu / validate.cpu
    table.target(
        "ours: client CPU within 1.5x of the validate-then-upload floor", f"{ratio:.2f}x", ratio <= 1.5
    )
    over = (ours.peak_rss - ctx.airflow_rss) / MIB
    table.target(
        f"ours: peak RSS within {RSS_BUDGET_MIB} MiB of `import airflow`",
        f"{over:+,.0f} MiB",
        over <= RSS_BUDGET_MIB,
    )
    table.notes.append(
        f"ours: client CPU {ours.cpu:.2f} s against the floor's {floor.cpu:.2f} s "
        f"({ours.cpu / max(floor.cpu, 1e-9):.1f}x): the validation pass before anything is sent, the job "
        "record and the body pass."
    )
    if not vendor_installed():
        table.notes.append(VENDOR_MISSING)
    return table


# -- 3 -----------------------------------------------------------------------------------------------


#: The vendor's default ``poll_interval`` (apache-airflow-providers-anthropic 1.2.0,
#: ``AnthropicBatchOperator(poll_interval=60)``, which its trigger polls at).
VENDOR_POLL_INTERVAL = 60.0
#: Creates timed before each run (the emulator's pace on this machine, under its load now) ...
PILOT_CREATES = 100
#: ... and the margin on that pace, so no batch ends before its trigger starts (those that do are
#: counted in the notes).
CREATE_PACE_MARGIN = 1.5
#: Ours runs with the connection's default budget: no ``max_requests_per_minute`` in the connection.
OURS_BUDGET = DEFAULT_MAX_REQUESTS_PER_MINUTE
#: The issue's targets at the real defaults.
P50_TARGET, MAX_TARGET, PER_THOUSAND_TARGET = 10.0, 30.0, 10.0


def _percentile(values: Sequence[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


def waiting(ctx: Context) -> Table:
    sizes = ctx.sizes
    scale = sizes.wait_time_scale
    real = scale == 1.0
    interval, cap = DEFAULT_POLL_INTERVAL / scale, DEFAULT_MAX_POLL_INTERVAL / scale
    vendor_interval = VENDOR_POLL_INTERVAL / scale
    LOG(f"3. waiting: {sizes.wait_counts} batches, tier limits {sizes.wait_limits}, intervals / {scale:g}")
    if real:
        mode = (
            "LONG mode, at the real defaults: ours polls with `poll_interval` "
            f"{DEFAULT_POLL_INTERVAL:.0f} s (the shared poller then sweeps every {SWEEP_INTERVAL:.0f} s, "
            f"within {SWEEP_BUDGET_SHARE:.0%} of the budget), the vendor's trigger every "
            f"{VENDOR_POLL_INTERVAL:.0f} s (its operator's default)."
        )
    else:
        mode = (
            f"QUICK mode, SHORTENED {scale:g}x (not the real defaults): ours `poll_interval` {interval:g} s "
            f"(sweeps every {min(interval, SWEEP_INTERVAL):g} s or as the budget allows), the vendor's "
            f"{vendor_interval:g} s. Latencies and requests per minute hold at these intervals only."
        )
    table = Table(
        "3. Waiting at scale"
        + (" (real defaults)" if real else " (QUICK: SHORTENED, not the real defaults)"),
        f"{mode} N triggers (one batch each, one connection) in one event loop, in a fresh process. "
        "Each batch ends on its own timer in the emulator, at a moment drawn uniformly over "
        f"{sizes.wait_window:.0f} s starting {sizes.wait_lead:.0f} s after the creates (created in an order "
        "unrelated to their ends; no clock jump: rate-limit windows and per-minute counts are real); "
        "latency runs from each batch's own end to its trigger's event; events awaited up to "
        f"{sizes.wait_max_wait:.0f} s after the last end. Tier limit = the emulator's requests per minute "
        "per key (0: none). Ours runs with the connection's default budget "
        f"({OURS_BUDGET}/min). Requests counted by the emulator over the run; req/min over the run's "
        "wall time, and per 1,000 batches; CPU per waiting batch per minute from the variant's own "
        "getrusage (5 s after the start to the last event, over the minutes each batch waited); peak RSS "
        "from the launcher.",
        [
            "variant",
            "batches",
            "tier limit",
            "req/min",
            "req/min per 1,000",
            "most in a minute",
            "429s",
            "listings / GETs",
            "events",
            "end -> event p50 / max s",
            "CPU ms / batch / min",
            "peak RSS MiB",
        ],
    )
    with EmulatorProcess("--processing-seconds", "86400") as emulator:
        plain = json.loads(emulator.connection_json)
        for count in sizes.wait_counts:
            for limit in sizes.wait_limits:
                for label, name in (("ours", "wait_ours"), ("vendor", "wait_vendor")):
                    emulator.reset(batches=True)
                    pilot = time.monotonic()
                    emulator.create_batches_ending([time.time() + 86400] * PILOT_CREATES)
                    pace = (time.monotonic() - pilot) / PILOT_CREATES * CREATE_PACE_MARGIN
                    emulator.reset(batches=True)
                    first_end = time.time() + count * pace + sizes.wait_lead
                    chance = random.Random(count * 100 + limit)
                    planned = [first_end + chance.uniform(0, sizes.wait_window) for _ in range(count)]
                    ends = emulator.create_batches_ending(planned)
                    emulator.reset()  # stats and rate windows start empty; the batches stay
                    emulator.admin("PATCH", "config", {"requests_per_minute": limit})
                    ids_file = Path(tempfile.mkdtemp(prefix="bench-wait-")) / "batch_ends.json"
                    ids_file.write_text(json.dumps(ends))  # 5,000 ids are too long for argv
                    measurement = run_variant(
                        name,
                        {
                            "batch_ends_path": str(ids_file),
                            "max_wait": sizes.wait_max_wait,
                            "interval": vendor_interval if name == "wait_vendor" else interval,
                            "max_interval": cap,
                        },
                        label=label,
                        env={"AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(plain)},
                        emulator=emulator,
                        timeout=max(ends.values()) - time.time() + sizes.wait_max_wait + 600,
                    )
                    shutil.rmtree(ids_file.parent)
                    _waiting_row(table, label, name, count, limit, measurement, emulator.stats(), real)
    return table


def _waiting_row(
    table: Table,
    label: str,
    name: str,
    count: int,
    limit: int,
    measurement: Measurement,
    stats: dict[str, Any],
    real: bool,
) -> None:
    calls = stats["calls"]
    total = sum(int(n) for statuses in calls.values() for n in statuses.values())
    limited = sum(int(statuses.get("429", 0)) for statuses in calls.values())
    listings = sum(int(n) for n in calls.get("GET /v1/messages/batches", {}).values())
    gets = sum(int(n) for n in calls.get("GET /v1/messages/batches/{id}", {}).values())
    most = int(stats["max_calls_in_any_minute"].get("all", 0))
    per_minute = total / (measurement.wall / 60)
    per_thousand = per_minute / (count / 1000)
    extra = measurement.extra
    latencies = extra["latencies"]
    fired = len(latencies) + extra["early_events"]
    cpu_ms = extra["waiting_cpu"] * 1000 / extra["batch_minutes_waited"]
    p50, worst = _percentile(latencies, 0.5), (latencies[-1] if latencies else float("nan"))
    LOG(
        f"   {label} N={count} limit={limit}: {measurement.wall:.0f} s, {per_minute:.1f} req/min "
        f"({per_thousand:.1f} per 1,000; most {most}), {limited} x 429, {fired}/{count} events "
        f"{extra['statuses']}, p50 {p50:.1f} s, max {worst:.1f} s, {cpu_ms:.2f} ms CPU/batch/min, "
        f"{measurement.peak_rss_mib:,.0f} MiB, {extra['ended_before_start']} ended before the triggers "
        "started"
    )
    table.rows.append(
        [
            label,
            f"{count:,}",
            f"{limit:,}" if limit else "none",
            f"{per_minute:,.1f}",
            f"{per_thousand:,.1f}",
            f"{most:,}",
            f"{limited:,}",
            f"{listings:,} / {gets:,}",
            f"{fired:,}",
            f"{p50:.1f} / {worst:.1f}",
            f"{cpu_ms:.2f}",
            _mib(measurement.peak_rss),
        ]
    )
    if (
        extra["crashed"]
        or set(extra["statuses"]) - {"success"}
        or fired < count
        or extra["ended_before_start"]
    ):
        table.notes.append(
            f"{label} N={count:,} tier {limit or 'none'}: events {extra['statuses']} "
            f"({fired:,}/{count:,} fired, {extra['early_events']:,} before their batch ended), "
            f"{extra['crashed']} triggers crashed, {extra['ended_before_start']} batches ended before the "
            "triggers started"
        )
    if name != "wait_ours":
        return
    where = f"ours, N={count:,}, tier {limit or 'none'}"
    table.target(
        f"{where}: within the budget ({OURS_BUDGET}/min)", f"most {most} in a minute", most <= OURS_BUDGET
    )
    if limit:
        table.target(f"{where}: no 429", f"{limited}", limited == 0)
    successes = int(extra["statuses"].get("success", 0))
    table.target(f"{where}: every trigger fires", f"{successes:,}/{count:,}", successes == count)
    if real:
        table.target(
            f"{where}: at most {PER_THOUSAND_TARGET:.0f} requests a minute per 1,000 batches",
            f"{per_thousand:.1f}",
            per_thousand <= PER_THOUSAND_TARGET,
        )
        table.target(
            f"{where}: end -> event p50 <= {P50_TARGET:.0f} s, max <= {MAX_TARGET:.0f} s (real defaults)",
            f"{p50:.1f} s / {worst:.1f} s",
            p50 <= P50_TARGET and worst <= MAX_TARGET,
        )


# -- 4 -----------------------------------------------------------------------------------------------


def token_counting(ctx: Context) -> Table:
    sizes = ctx.sizes
    source = requests_file(sizes.count_requests, user_bytes=600, seed=11)
    limit = sizes.count_rpm
    LOG(f"4. token counting: {source.requests:,} requests, limit {limit}/min")
    table = Table(
        "4. Token counting",
        f"{source.requests:,} count_tokens calls against an emulator limited to N = {limit:,} per minute "
        "(sliding one-minute window per key). Throughput = requests / whole wall time.",
        [
            "variant",
            "limit /min",
            "wall s",
            "requests ok",
            "failures",
            "429 answers",
            "throughput /min",
            "vs limit",
            "vs best possible",
            "CPU s",
            "peak RSS MiB",
        ],
    )
    unlimited_rate = 0.0
    for label, name, flags in (
        ("ours, no limit (client speed)", "count_ours", ()),
        ("ours: AnthropicCountTokensOperator", "count_ours", ("--count-tokens-rpm", str(limit))),
        ("vendor: hook.count_tokens loop", "count_vendor", ("--count-tokens-rpm", str(limit))),
    ):
        with EmulatorProcess(*flags) as emulator:
            measurement = run_variant(
                name,
                {"requests_path": str(source.path)},
                label=label,
                env={"AIRFLOW_CONN_ANTHROPIC_DEFAULT": emulator.connection_json},
                emulator=emulator,
            )
            calls = emulator.stats()["calls"].get("POST /v1/messages/count_tokens", {})
        ok = int(measurement.extra["requests"])
        failures = source.requests - ok
        throttled = int(calls.get("429", 0))
        per_minute = ok / (measurement.wall / 60)
        LOG(f"   {label}: {measurement.wall:.1f} s, {ok} ok, {throttled} x 429, {per_minute:,.0f}/min")
        if not flags:
            unlimited_rate = ok / measurement.wall
            table.rows.append(
                [
                    label,
                    "-",
                    f"{measurement.wall:.1f}",
                    f"{ok:,}",
                    str(failures),
                    str(throttled),
                    f"{per_minute:,.0f}",
                    "-",
                    "-",
                    f"{measurement.cpu:.2f}",
                    _mib(measurement.peak_rss),
                ]
            )
            continue
        best = best_wall(source.requests, limit, unlimited_rate)
        table.rows.append(
            [
                label,
                f"{limit:,}",
                f"{measurement.wall:.1f}",
                f"{ok:,}",
                str(failures),
                str(throttled),
                f"{per_minute:,.0f}",
                f"{per_minute / limit:.0%}",
                f"{best / measurement.wall:.0%}",
                f"{measurement.cpu:.2f}",
                _mib(measurement.peak_rss),
            ]
        )
        if name == "count_ours":
            table.target(
                "ours: throughput at least 90 % of the limit",
                f"{per_minute / limit:.0%}",
                per_minute >= 0.9 * limit,
            )
            table.target("ours: zero failures", str(failures), failures == 0)
            table.notes.append(
                f"'vs best possible': a client that never wastes a slot, at the unlimited client speed "
                f"measured "
                f"above, needs {best:.1f} s for {source.requests:,} requests under this window "
                "(N at once, the next N when the window has slid by 60 s...); ours took "
                f"{measurement.wall:.1f} s."
            )
    return table


def best_wall(requests: int, limit: int, rate: float) -> float:
    """Shortest wall time for ``requests`` calls under an N-per-sliding-minute limit at ``rate`` calls/s.

    The window admits N calls in any 60 s, so call k can go no earlier than 60 s after call k - N.
    """
    times: list[float] = []
    for index in range(requests):
        earliest = index / rate if rate > 0 else 0.0
        if index >= limit:
            earliest = max(earliest, times[index - limit] + 60.0)
        if times:
            earliest = max(earliest, times[-1] + (1 / rate if rate > 0 else 0.0))
        times.append(earliest)
    return times[-1] + (1 / rate if rate > 0 else 0.0)


# -- 5 -----------------------------------------------------------------------------------------------

PARQUET_RSS_BUDGET_MIB = 150
PLAIN_PARQUET = "pyarrow read_json + compute + write_table, same columns (floor)"
OURS_PARQUET = "ours: transfer to Parquet"


def results_to_parquet(ctx: Context) -> Table:
    """Flattened Parquet rows vs the JSONL path vs a plain pyarrow conversion; RSS at two batch sizes."""
    sizes = {"small": ctx.sizes.results_requests // 4, "full": ctx.sizes.results_requests}
    measured: dict[str, dict[str, Measurement]] = {}
    size = 0
    with EmulatorProcess("--processing-seconds", "0", "--errored-fraction", "0.02") as emulator:
        for key, requests in sizes.items():
            source = requests_file(requests)
            LOG(f"5. results to Parquet: {requests:,} requests; creating the batch in the emulator")
            created = emulator.create_batch_from_body(body_file(source))
            batch = emulator.get_batch(created["id"])
            size = emulator.download(batch["results_url"])
            ours = ("results_ours", {"batch_id": batch["id"], "output_format": "parquet"})
            variants = [(OURS_PARQUET, *ours)]
            if key == "full":
                variants = [
                    (
                        PLAIN_PARQUET,
                        "results_pyarrow_plain",
                        {"results_url": batch["results_url"], "batch_id": batch["id"]},
                    ),
                    ("ours: transfer to JSONL", "results_ours", {"batch_id": batch["id"]}),
                    *variants,
                ]
            with tempfile.TemporaryDirectory(prefix="bench-parquet-") as out_dir:
                with_dir = [(label, name, {**params, "out_dir": out_dir}) for label, name, params in variants]
                measured[key] = _repeat(ctx, with_dir, emulator)
    full = measured["full"]
    table = _throughput_table(
        "5. Results to Parquet",
        f"{sizes['full']:,} result lines, {size / 1e6:,.0f} MB, from the emulator to local Parquet (zstd, "
        "rows built per 4 MiB of input, row groups of at most 10,000 rows) and to JSONL. The floor is the "
        "cheapest plain pyarrow conversion to the same file: download the lines, `read_json` of only the "
        "fields the columns need (explicit schema, one thread) per 16 MiB block, the same columns by "
        "pyarrow compute (text joined, usage, cost_usd, errors, raw line, batch id, round), `write_table`; "
        "no verification, no staging, no checksum. (`read_json` of the whole file with an inferred schema "
        "writes nested columns, no raw line and no cost, and costs about twice the CPU in 2 GiB.) "
        f"Rounds interleaved, median of {ctx.sizes.repeat}.",
        full,
        PLAIN_PARQUET,
        ctx,
        size,
    )
    for what, ours_figure, plain_figure in (
        ("client CPU", full[OURS_PARQUET].cpu, full[PLAIN_PARQUET].cpu),
        ("wall", full[OURS_PARQUET].wall, full[PLAIN_PARQUET].wall),
    ):
        ratio = ours_figure / plain_figure
        table.target(
            f"Parquet: {what} within 1.2x of the plain pyarrow conversion", f"{ratio:.2f}x", ratio <= 1.2
        )
    over = (full[OURS_PARQUET].peak_rss - ctx.airflow_rss) / MIB
    table.target(
        f"Parquet: peak RSS within {PARQUET_RSS_BUDGET_MIB} MiB of `import airflow`",
        f"{over:+,.0f} MiB",
        over <= PARQUET_RSS_BUDGET_MIB,
    )
    small = measured["small"][OURS_PARQUET].peak_rss
    growth = (full[OURS_PARQUET].peak_rss - small) / MIB
    table.target(
        f"Parquet: peak RSS independent of the batch size ({sizes['small']:,} vs {sizes['full']:,} results)",
        f"{growth:+,.0f} MiB",
        abs(growth) <= 32,
    )
    table.notes.append(
        f"Parquet peak RSS at {sizes['small']:,} results: {_mib(small)} MiB; "
        f"at {sizes['full']:,}: {_mib(full[OURS_PARQUET].peak_rss)} MiB."
    )
    assert full[OURS_PARQUET].extra["results"] == sizes["full"], full[OURS_PARQUET].extra
    return table


def _spread(values: Sequence[float], digits: int = 2) -> str:
    return " / ".join(
        f"{value:,.{digits}f}" for value in (min(values), statistics.median(values), max(values))
    )


#: Requests at which a job's files are kept in a temporary folder, removed after the scenario.
TEMPORARY_FROM_REQUESTS = 1_000_000


def create_at_scale(ctx: Context) -> Table:
    """The create operator's real ``execute()`` at two sizes ten times apart, against the floors: does it
    stay linear, and within 1.5x of the validate-then-upload floor's client CPU at both sizes?"""
    small, large = ctx.sizes.scale_requests
    with tempfile.TemporaryDirectory(prefix="bench-create-") as scratch:

        def folder(count: int) -> Path | None:
            return Path(scratch) if count >= TEMPORARY_FROM_REQUESTS else None

        sources = {count: requests_file(count, directory=folder(count)) for count in (small, large)}
        bodies = {count: batch_body_files(source) for count, source in sources.items()}
        LOG(f"6. create at scale: {small:,} and {large:,} requests ({sources[large].size / 1e9:,.2f} GB)")
        runs = _create_at_scale_runs(ctx, sources, bodies)
        for count in sources:
            if folder(count) is None:  # bench/data keeps the small file; its split bodies go
                for path in bodies[count]:
                    path.unlink(missing_ok=True)
    return _create_at_scale_table(ctx, sources, bodies, runs)


SCALE_FLOOR = "httpx upload of each batch body (floor)"
SCALE_OURS = "ours: operator execute()"


def _create_at_scale_runs(
    ctx: Context, sources: dict[int, RequestsFile], bodies: dict[int, list[Path]]
) -> dict[tuple[int, str], list[Measurement]]:
    runs: dict[tuple[int, str], list[Measurement]] = {}
    with EmulatorProcess("--processing-seconds", "86400") as emulator:
        env = {"AIRFLOW_CONN_ANTHROPIC_DEFAULT": emulator.connection_json}
        for round_number in range(ctx.sizes.repeat):
            for count, source in sources.items():
                variants: list[tuple[str, str, dict[str, Any]]] = [
                    (SCALE_FLOOR, "create_raw_batches", {"body_paths": [str(b) for b in bodies[count]]}),
                    (CREATE_VALIDATE, "create_validate_floor", {"requests_path": str(source.path)}),
                    (SCALE_OURS, "create_operator", {"requests_path": str(source.path)}),
                ]
                for label, name, params in variants:
                    measurement = run_variant(
                        name, params, label=label, env=env, emulator=emulator, timeout=3600
                    )
                    assert measurement.extra["requests"] == count, measurement
                    LOG(
                        f"   run {round_number + 1}/{ctx.sizes.repeat} {count:,} {label}: "
                        f"{measurement.wall:.2f} s wall, {measurement.cpu:.2f} s CPU, "
                        f"{measurement.peak_rss_mib:,.0f} MiB, emulator {measurement.emulator_cpu:.2f} s CPU"
                    )
                    runs.setdefault((count, label), []).append(measurement)
                    emulator.reset(batches=True)
    return runs


def _create_at_scale_table(
    ctx: Context,
    sources: dict[int, RequestsFile],
    bodies: dict[int, list[Path]],
    runs: dict[tuple[int, str], list[Measurement]],
) -> Table:
    small, large = sources
    table = Table(
        "6. Create at scale",
        f"The create operator's real `execute()` (validation, job record in a task-state store, re-attach "
        f"check, a watermark and a paid create per batch, manifest; no waiting) on {small:,} and {large:,} "
        f"requests ({sources[small].size / 1e6:,.0f} MB and {sources[large].size / 1e9:,.2f} GB JSONL, "
        f"{len(bodies[small])} and {len(bodies[large])} batches: the API takes at most 100,000 requests "
        "and 256 MB a batch), against the validate-then-upload floor (every line checked by hand, then "
        "the same batches streamed) and httpx uploading the same batch bodies from disk. "
        f"{ctx.sizes.repeat} interleaved rounds; min / median / max. Client CPU is the client process's "
        "own (getrusage) and the figure that carries over to the real API; the emulator's is apart (it "
        "parses every body on the same cores, so wall mostly measures it). Files of 1,000,000 requests "
        "live in a temporary folder removed after the scenario.",
        [
            "requests",
            "variant",
            "batches",
            "client CPU s",
            "median CPU vs validate floor",
            "wall s",
            "client CPU us / request",
            "emulator CPU s (median)",
            "peak RSS over `import airflow` MiB (max)",
        ],
    )
    for count in (small, large):
        floor_cpu = statistics.median(run.cpu for run in runs[(count, CREATE_VALIDATE)])
        for label in (SCALE_FLOOR, CREATE_VALIDATE, SCALE_OURS):
            measured = runs[(count, label)]
            table.rows.append(
                [
                    f"{count:,}",
                    label,
                    str(measured[-1].extra["batches"]),  # ours keeps room for its proof request
                    _spread([run.cpu for run in measured]),
                    f"{statistics.median(run.cpu for run in measured) / floor_cpu:.2f}x",
                    _spread([run.wall for run in measured]),
                    f"{statistics.median(run.cpu for run in measured) / count * 1e6:,.1f}",
                    f"{statistics.median(run.emulator_cpu for run in measured):.2f}",
                    f"{(max(run.peak_rss for run in measured) - ctx.airflow_rss) / MIB:+,.0f}",
                ]
            )
        ratio = statistics.median(run.cpu for run in runs[(count, SCALE_OURS)]) / floor_cpu
        table.target(
            f"ours, {count:,}: client CPU within 1.5x of the validate-then-upload floor",
            f"{ratio:.2f}x",
            ratio <= 1.5,
        )
    ours_small, ours_large = runs[(small, SCALE_OURS)], runs[(large, SCALE_OURS)]
    scale = large / small
    growth = statistics.median(run.cpu for run in ours_large) / statistics.median(
        run.cpu for run in ours_small
    )
    table.target(
        f"ours: client CPU grows linearly, {small:,} to {large:,} (per-request ratio within 1.10)",
        f"{growth / scale:.2f}",
        growth / scale <= 1.10,
    )
    over = (max(run.peak_rss for run in ours_large) - ctx.airflow_rss) / MIB
    table.target(
        f"ours: peak RSS within {RSS_BUDGET_MIB} MiB of `import airflow` at {large:,}",
        f"{over:+,.0f} MiB",
        over <= RSS_BUDGET_MIB,
    )
    return table


#: ``python -m bench --only NAMES``: each name's scenarios.
SCENARIO_NAMES: dict[str, tuple[int, ...]] = {
    "export": (1,),
    "create": (2, 6),
    "waiting": (3,),
    "counting": (4,),
    "parquet": (5,),
}

SCENARIOS: dict[int, Callable[[Context], Table]] = {
    1: results_export,
    2: batch_creation,
    3: waiting,
    4: token_counting,
    5: results_to_parquet,
    6: create_at_scale,
}
