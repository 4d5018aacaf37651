"""Runs real DAGs with ``airflow dags test`` on a migrated SQLite metadata DB, in a subprocess.

``airflow dags test`` runs deferred tasks' triggers in line, so a deferrable pipeline runs end to
end without a triggerer. The harness reads task states and XComs back from the SQLite DB.

``dags_test(..., forked=True)`` runs the same command through Airflow's own CLI entry point in a
fork of a zygote: one process per ``AirflowEnv`` that imported Airflow once and then only forks,
which saves the seconds each new ``airflow`` process spends starting. The zygote runs no test, so a
fork inherits no state of one (forking the test process itself did: a pytest-xdist worker's earlier
tests left process-wide pollers and budgets that hung a fork's trigger). Each distinct path keeps at
least one test that runs the real ``airflow`` executable.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


@dataclass
class DagRunOutcome:
    dag_id: str
    run_id: str | None
    returncode: int
    output: str
    env: AirflowEnv

    @property
    def state(self) -> str | None:
        rows = self.env.query(
            "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", self.dag_id, self.run_id
        )
        return rows[0][0] if rows else None

    def task_states(self) -> dict[str, str | None]:
        rows = self.env.query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            self.dag_id,
            self.run_id,
        )
        return {task_id: state for task_id, state in rows}

    def tries(self, task_id: str) -> int:
        rows = self.env.query(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            self.dag_id,
            self.run_id,
            task_id,
        )
        return int(rows[0][0]) if rows else 0

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        rows = self.env.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            self.dag_id,
            self.run_id,
            task_id,
            key,
        )
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def mapped_xcoms(self, task_id: str, key: str = "return_value") -> list[Any]:
        """The XCom of every instance of a mapped task, in map index order."""
        rows = self.env.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ? "
            "ORDER BY map_index",
            self.dag_id,
            self.run_id,
            task_id,
            key,
        )
        return [json.loads(row[0]) if isinstance(row[0], (str, bytes)) else row[0] for row in rows]

    def all_xcom_text(self) -> str:
        rows = self.env.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ?", self.dag_id, self.run_id
        )
        return "\n".join(str(row[0]) for row in rows)

    def rendered_fields_text(self) -> str:
        rows = self.env.query(
            "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ? AND run_id = ?",
            self.dag_id,
            self.run_id,
        )
        return "\n".join(str(row[0]) for row in rows)


class AirflowEnv:
    """An AIRFLOW_HOME with a migrated SQLite DB and a DAGs folder, for subprocess Airflow commands."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dags_folder = home / "dags"
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.extra_env: dict[str, str] = {}
        self._zygote: _Zygote | None = None

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def airflow(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def airflow_forked(self, *args: str, timeout: float = 300, **env: str) -> tuple[int, str]:
        """``airflow <args>`` by Airflow's CLI entry point, forked by this env's zygote: exit code, output."""
        if self._zygote is None or self._zygote.poll() is not None:
            self._zygote = _Zygote(self.env())
        return self._zygote.run(list(args), self.env(**env), timeout)

    def close(self) -> None:
        """Stop the zygote, if one was started."""
        if self._zygote is not None:
            self._zygote.stop()
            self._zygote = None

    def migrate(self) -> None:
        result = self.airflow("db", "migrate")
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}")

    def write_dag(self, source: str, name: str | None = None) -> Path:
        path = self.dags_folder / f"{name or 'dag_' + uuid.uuid4().hex[:8]}.py"
        path.write_text(textwrap.dedent(source))
        return path

    def dags_test(
        self,
        dag_id: str,
        dag_file: Path,
        *,
        conf: dict[str, Any] | None = None,
        timeout: float = 300,
        forked: bool = False,
        **env: str,
    ) -> DagRunOutcome:
        if self.dags_folder not in dag_file.resolve().parents:  # the DAG bundle only reads its own folder
            dag_file = Path(shutil.copy(dag_file, self.dags_folder / dag_file.name))
        before = {row[0] for row in self.query("SELECT run_id FROM dag_run WHERE dag_id = ?", dag_id)}
        args = ["dags", "test", dag_id, "-f", str(dag_file)]
        if conf is not None:
            args += ["-c", json.dumps(conf)]
        if forked:
            returncode, output = self.airflow_forked(*args, timeout=timeout, **env)
        else:
            result = self.airflow(*args, timeout=timeout, **env)
            returncode, output = result.returncode, result.stdout + result.stderr
        after = self.query("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id", dag_id)
        new = [row[0] for row in after if row[0] not in before]
        return DagRunOutcome(dag_id, new[-1] if new else None, returncode, output, self)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.db_path.exists():
            return []
        with sqlite3.connect(self.db_path) as db:
            return db.execute(sql, params).fetchall()


#: The zygote: imports what every ``airflow`` command imports, then forks one child per request
#: (a JSON line: args, environment, output path), answering with the child's pid, then its exit code.
ZYGOTE = """
import json, os, sys
from airflow.cli import cli_parser  # noqa: F401 - the import each new airflow process pays for
from tests.airflow_harness import _run_airflow_cli, _warm
protocol = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the zygote itself prints stays off the protocol
_warm()
print("ready", file=protocol)
for line in sys.stdin:
    request = json.loads(line)
    output = os.open(request["output"], os.O_WRONLY | os.O_TRUNC)
    pid = os.fork()
    if pid == 0:
        _run_airflow_cli(request["args"], request["env"], output)
    os.close(output)
    print(pid, file=protocol)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), file=protocol)
"""


class _Zygote:
    def __init__(self, environment: dict[str, str]) -> None:
        repo = str(Path(__file__).resolve().parents[1])
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            env={**environment, "PYTHONPATH": repo},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=repo,
            start_new_session=True,
        )
        self._buffer = b""
        self._child = 0
        if self._line(120) != "ready":
            self.stop()
            raise RuntimeError("the airflow zygote did not start")

    def poll(self) -> int | None:
        return self.process.poll()

    def _line(self, timeout: float) -> str | None:
        """The zygote's next line, or None when ``timeout`` passes first."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.process.stdout], [], [], remaining)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the airflow zygote exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def run(self, args: list[str], environment: dict[str, str], timeout: float) -> tuple[int, str]:
        assert self.process.stdin is not None
        with tempfile.NamedTemporaryFile(prefix="airflow-forked-", suffix=".log") as output:
            request = {"args": args, "env": environment, "output": output.name}
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            pid = self._child = int(self._line(60) or "0")
            exit_code = self._line(timeout)
            if exit_code is None:  # past the timeout: the command and whatever it started
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                exit_code = self._line(30)
            else:  # what the command started and left behind (a task process blocked on its pipe)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            text = Path(output.name).read_text(errors="replace")
        self._child = 0
        return int(exit_code if exit_code is not None else -9), text

    def stop(self) -> None:
        """Kill the zygote and a command still running (its own process group: a test that timed out)."""
        for group in (self._child, self.process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(group, signal.SIGKILL)
        self.process.wait(10)


#: What every ``dags test`` imports after the CLI parser: the command, the DAG run models, the task
#: supervisor and the in-process Execution API its tasks talk to (about 6 s of each run under load).
WARM_MODULES = (
    "airflow.cli.commands.dag_command",
    "airflow.models.dagrun",
    "airflow.models.taskinstance",
    "airflow.serialization.serialized_objects",
    "airflow.dag_processing.dagbag",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.standard.operators.python",
    "airflow.api_fastapi.execution_api.app",
    "aiohttp",
    "a2wsgi",
    "dill",
)


def _warm() -> None:
    """In the zygote: import what each ``dags test`` would import, and build the Execution API app once
    (its generated routes and schemas are cached per process), so forks start with them loaded."""
    import importlib

    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):  # a module of one Airflow version only
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        from airflow.api_fastapi.execution_api.app import create_task_execution_api_app

        create_task_execution_api_app()


def _run_airflow_cli(args: list[str], environment: dict[str, str], output_fd: int) -> None:
    """In a child of the zygote: ``airflow <args>`` with ``environment``, output to ``output_fd``; exits."""
    code = 1
    try:
        os.setpgrp()  # signals meant for the test process's group do not reach this one
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives until _exit
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(environment)
        from airflow import settings

        # Settings as a new process would read them from this environment; the parent's engine (its
        # DB, its pooled connections) is dropped, never used from the fork.
        settings.dispose_orm(do_log=False)
        settings.initialize()
        from airflow.__main__ import main

        sys.argv = ["airflow", *args]
        main()
        code = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, int) or exit_.code is None:
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
