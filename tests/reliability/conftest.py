"""Fixtures of the reliability and security suite: a distinctive API key, fault-injecting emulators,
secret scans, a real Airflow cluster (api-server, scheduler, dag-processor, triggerer; LocalExecutor on
SQLite) and the figures the README's reliability section reports.

Every process is bound to 127.0.0.1 on a free port, logs to a file under the test's tmp dir, runs in
its own process group, and is stopped (SIGTERM, then SIGKILL, by process group) when the test ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.emulator.config import mask_key
from airflow_provider_batches.emulator.faults import FaultDecision, FaultInjector
from tests.airflow_harness import AirflowEnv

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]

#: The key every reliability emulator accepts. Distinctive, so that a scan for it cannot miss.
SECRET_KEY = "sk-ant-api03-RELIABILITY-SUITE-SECRET-q7X2v9LmZ4pK8wN3"
#: A middle part of the key: finds a key that was cut, re-wrapped or partly masked too.
SECRET_FRAGMENTS = (SECRET_KEY, "RELIABILITY-SUITE-SECRET", "q7X2v9LmZ4pK8wN3")
MODEL = "claude-haiku-4-5"


# -- figures for the README -----------------------------------------------------------------------

FIGURES: dict[str, Any] = {
    "pipeline_runs": 0,
    "faults_injected": Counter(),
    "crashes_survived": 0,
    "inputs_rejected": 0,
    "batches_duplicated": 0,
    "secret_scans": 0,
}


def record_faults(stats: dict[str, Any]) -> None:
    FIGURES["faults_injected"].update(stats.get("faults_injected", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    touched = any(FIGURES[name] for name in FIGURES)
    if not touched:
        return
    figures = {**FIGURES, "faults_injected": dict(sorted(FIGURES["faults_injected"].items()))}
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(json.dumps(figures, indent=2))
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(figures, indent=2) + "\n")


# -- emulators ------------------------------------------------------------------------------------


class FaultsWithRateLimits(FaultInjector):
    """The emulator's seeded faults, plus 429s (with retry-after) for a seeded share of the other calls.

    The emulator makes 429s from its per-minute limit, which comes in bursts; the issue asks for a
    fraction of calls, so this draws a fourth number per call from its own seeded RNG.
    """

    def __init__(self, seed: int, rate_limited_fraction: float) -> None:
        super().__init__(seed)
        self.rate_limited_fraction = rate_limited_fraction
        self._extra = random.Random(seed + 1)

    def decide(
        self, config: EmulatorConfig, *, is_results_download: bool, is_create: bool = False
    ) -> FaultDecision:
        decision = super().decide(config, is_results_download=is_results_download, is_create=is_create)
        draw = self._extra.random()
        unfaulted = decision.status is None and not decision.drop and not decision.rate_limited
        if unfaulted and draw < self.rate_limited_fraction:
            return dataclasses.replace(decision, rate_limited=True)
        return decision


#: 10 % of calls answered 429, 529 or 500; 2 % dropped before the server acts, 2 % after it acted
#: (the answer is lost: a create has made its batch); one results download in five cut.
FAULTS = {
    "overloaded_fraction": 0.035,
    "api_error_fraction": 0.035,
    "drop_fraction": 0.02,
    "drop_after_fraction": 0.02,
    "retry_after_ms": 100,
    "cut_results_after_bytes": 3000,
    "cut_results_fraction": 0.2,
}
RATE_LIMITED_FRACTION = 0.035 / (1 - 0.035 - 0.035 - 0.02 - 0.02)


def start_emulator(*, faults: bool = False, seed: int = 7, **settings: Any) -> Emulator:
    config = EmulatorConfig(
        api_keys=[SECRET_KEY],
        seed=seed,
        **{"processing_seconds": 2, "canceling_seconds": 0, **(FAULTS if faults else {}), **settings},
    )
    emulator = Emulator(config).start()
    if faults:
        emulator.state.faults = FaultsWithRateLimits(seed, RATE_LIMITED_FRACTION)
    return emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fault-free emulator that accepts only SECRET_KEY (batches end 2 s after their create)."""
    emu = start_emulator()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def faulty_emulator() -> Iterator[Emulator]:
    emu = start_emulator(faults=True)
    try:
        yield emu
    finally:
        emu.stop()


def connection(emulator: Emulator, **extra: Any) -> str:
    conn: dict[str, Any] = {
        "conn_type": "anthropic_batches",
        "host": emulator.base_url,
        "password": SECRET_KEY,
    }
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def batches_per_key(emulator: Emulator) -> dict[str, int]:
    return dict(emulator.admin.stats()["batches_created"])


def batches_created(emulator: Emulator) -> int:
    return sum(batches_per_key(emulator).values())


# -- inputs ---------------------------------------------------------------------------------------


def ask(custom_id: str, text: str = "hello", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": text}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def write_requests(path: Path, count: int, *, prefix: str = "q") -> Path:
    """``count`` requests; their answers are longer than the cut, so a cut really breaks a download."""
    with path.open("w") as out:
        for index in range(count):
            text = f"Question {index}: what is {index} squared? Answer in one sentence, please."
            out.write(json.dumps(ask(f"{prefix}-{index}", text)) + "\n")
    return path


# -- secret scans ---------------------------------------------------------------------------------


def leaks_in_text(text: str) -> list[str]:
    return [fragment for fragment in SECRET_FRAGMENTS if fragment in text]


def scan_tree(root: Path) -> dict[str, list[str]]:
    """Every file under ``root`` (logs, manifests, the SQLite DB and its journal) that holds the key."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        hits = [fragment for fragment in SECRET_FRAGMENTS if fragment.encode() in data]
        if hits:
            found[str(path)] = hits
    return found


DB_SCANS = {
    "xcom": "SELECT dag_id, run_id, task_id, key, value FROM xcom",
    "rendered_task_instance_fields": (
        "SELECT dag_id, run_id, task_id, rendered_fields FROM rendered_task_instance_fields"
    ),
    "trigger": "SELECT id, classpath, kwargs FROM trigger",
    "task_instance": "SELECT task_id, next_kwargs, rendered_map_index FROM task_instance",
    "task_state": "SELECT * FROM task_state",
    "dag_run": "SELECT run_id, conf FROM dag_run",
    "variable": "SELECT key, val FROM variable",
    "log": "SELECT event, extra FROM log",
}


def scan_db(db_path: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Key fragments found per table, and rows read per table (tables absent in this Airflow are skipped)."""
    found: dict[str, list[str]] = {}
    rows_read: dict[str, int] = {}
    with sqlite3.connect(db_path) as db:
        for table, sql in DB_SCANS.items():
            try:
                rows = db.execute(sql).fetchall()
            except sqlite3.OperationalError:
                continue
            rows_read[table] = len(rows)
            text = "\n".join(repr(row) for row in rows)
            hits = leaks_in_text(text)
            if hits:
                found[table] = hits
    return found, rows_read


def assert_no_secret(*roots: Path, texts: dict[str, str] | None = None) -> None:
    """The key appears in no file under ``roots`` (byte scan: logs, manifests, the DB) and no text."""
    leaks: dict[str, Any] = {}
    for root in roots:
        leaks.update(scan_tree(root))
        for db_path in root.rglob("*.db"):
            found, _ = scan_db(db_path)
            leaks.update({f"{db_path}:{table}": hits for table, hits in found.items()})
    for name, text in (texts or {}).items():
        if hits := leaks_in_text(text):
            leaks[name] = hits
    FIGURES["secret_scans"] += 1
    assert not leaks, f"the API key leaked into: {leaks}"


# -- a real Airflow cluster -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_group(process: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = process.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children of the group may linger a moment longer.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
        if not _group_alive(pgid):
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TRIGGER_MANY = """
import sys
from airflow.api.client import get_current_api_client

client = get_current_api_client()
for run_id in sys.argv[2:]:
    client.trigger_dag(dag_id=sys.argv[1], run_id=run_id, triggering_user_name="reliability")
"""


class MetadataDB(Protocol):
    """A metadata database other than SQLite (PostgreSQL, see services.py): its URL and a query."""

    url: str

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]: ...


class AirflowCluster:
    """api-server, scheduler, dag-processor and triggerer(s): by default LocalExecutor on one SQLite DB;
    with ``database`` and ``broker_url``, PostgreSQL and CeleryExecutor with ``workers`` Celery workers.

    ``start(name)`` / ``stop(name)`` run one component in its own process group, its output in
    ``logs/<name>-<n>.log``; ``triggerer-2`` or ``celery-worker-1`` is another instance of a component,
    with its own environment overrides in ``process_env[name]``. Task logs land under ``home/logs``.
    """

    COMPONENTS: dict[str, list[str]] = {
        "api-server": ["api-server", "--host", "127.0.0.1"],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
        "celery-worker": ["celery", "worker", "--skip-serve-logs", "--without-gossip", "--without-mingle"],
    }

    def __init__(
        self,
        home: Path,
        template_db: Path | None = None,
        *,
        database: MetadataDB | None = None,
        broker_url: str | None = None,
        triggerers: int = 1,
        workers: int = 0,
    ) -> None:
        self.env_home = AirflowEnv(home)
        self.home = home
        self.log_dir = home / "process-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.database = database
        if template_db is not None:
            shutil.copy(template_db, self.env_home.db_path)
        self.triggerers = (
            [f"triggerer-{n}" for n in range(1, triggerers + 1)] if triggerers > 1 else ["triggerer"]
        )
        self.workers = [f"celery-worker-{n}" for n in range(1, workers + 1)]
        self.process_env: dict[str, dict[str, str]] = {}
        self.api_port = free_port()
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        self.started: list[subprocess.Popen[Any]] = []
        self._counts: Counter[str] = Counter()
        base = f"http://127.0.0.1:{self.api_port}"
        self.env_home.extra_env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if broker_url else "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": "",
                "AIRFLOW__API__BASE_URL": base,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": "reliability-suite-jwt-secret-not-the-api-key",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "PYTHONPATH": str(REPO),
            }
        )
        if database is not None:
            self.env_home.extra_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database.url
        if broker_url is not None:
            self.env_home.extra_env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + (database.url if database else "sqlite:///"),
                }
            )

    # -- processes --

    def start(self, name: str) -> subprocess.Popen[Any]:
        self._counts[name] += 1
        log_path = self.log_dir / f"{name}-{self._counts[name]}.log"
        component = re.sub(r"-\d+$", "", name)
        command = [str(BIN / "airflow"), *self.COMPONENTS[component]]
        if component == "celery-worker":
            command += ["--celery-hostname", f"{name}@127.0.0.1"]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                env=self.env_home.env(**self.process_env.get(name, {})),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        self.processes[name] = process
        self.started.append(process)
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_group(process)

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group (a crashed machine, not a graceful stop)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop_group(process)
        self.processes.clear()

    def start_all(self) -> None:
        self.start("api-server")
        self.wait_for(self.api_healthy, 120, "the api-server to answer")
        for name in ("dag-processor", "scheduler", *self.triggerers, *self.workers):
            self.start(name)

    def api_healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def assert_running(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"cluster processes exited: {dead}\n{self.tail_logs()}"

    def tail_logs(self, chars: int = 3000) -> str:
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-chars:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            self.assert_running()
            time.sleep(poll)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.tail_logs()}")

    # -- DAGs and runs --

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.env_home.airflow(*args, timeout=timeout)

    def write_dag(self, source: str, name: str) -> Path:
        return self.env_home.write_dag(source, name=name)

    def dag_parsed(self, dag_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM dag WHERE dag_id = ? AND NOT is_stale", dag_id))

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None) -> str:
        self.wait_for(lambda: self.dag_parsed(dag_id), 120, f"the dag-processor to parse {dag_id}")
        args = ["dags", "trigger", dag_id, "--run-id", run_id]
        if conf:
            args += ["--conf", json.dumps(conf)]
        result = self.airflow(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        return run_id

    def trigger_many(self, dag_id: str, run_ids: list[str]) -> list[str]:
        """Create many runs in one Airflow process (``airflow dags trigger`` once per run is minutes)."""
        self.wait_for(lambda: self.dag_parsed(dag_id), 120, f"the dag-processor to parse {dag_id}")
        result = subprocess.run(
            [str(BIN / "python"), "-c", TRIGGER_MANY, dag_id, *run_ids],
            env=self.env_home.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return run_ids

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.database is not None:
            return self.database.query(sql.replace("?", "%s"), *params)
        for _ in range(20):
            try:
                return self.env_home.query(sql, *params)
            except sqlite3.OperationalError as exc:  # "database is locked" while a writer commits
                if "locked" not in str(exc):
                    raise
                time.sleep(0.2)
        return self.env_home.query(sql, *params)

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return rows[0][0] if rows else None

    def task(self, dag_id: str, run_id: str, task_id: str) -> tuple[str | None, int]:
        rows = self.query(
            "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            dag_id,
            run_id,
            task_id,
        )
        return (rows[0][0], int(rows[0][1] or 0)) if rows else (None, 0)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        return str(
            self.wait_for(
                lambda: state if (state := self.run_state(dag_id, run_id)) in ("success", "failed") else None,
                timeout,
                f"run {run_id} of {dag_id} to finish",
            )
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            dag_id,
            run_id,
            task_id,
            key,
        )
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, (str, bytes)) else value


@pytest.fixture
def airflow_cluster(tmp_path: Path, airflow_env: AirflowEnv) -> Iterator[AirflowCluster]:
    """A running api-server, scheduler (LocalExecutor), dag-processor and triggerer; stopped afterwards.

    Point connections at emulators with ``cluster.env_home.extra_env[...]`` before ``start_all()``:
    the fixture yields the cluster not yet started, so a test can set its environment first.
    """
    cluster = AirflowCluster(tmp_path / "cluster", airflow_env.db_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()


def masked(api_key: str) -> str:
    return mask_key(api_key)
