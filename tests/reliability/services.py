"""The services a production-shaped Airflow runs on: PostgreSQL (metadata DB) and Redis (Celery broker),
Debian's packages, installed when missing and run by the test itself on 127.0.0.1 on free ports.

Each server gets its own data directory under a fresh temp dir, runs in its own process group, and is
stopped by :meth:`stop` (the fixtures call it in ``finally``). PostgreSQL refuses to run as root, so it
runs as the ``postgres`` user the Debian package creates.

``python -m tests.reliability.services`` installs the packages (what ``make reliability`` needs once).
"""

from __future__ import annotations

import contextlib
import glob
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

from tests.reliability.conftest import free_port, stop_group

DEBIAN_PACKAGES = ("postgresql", "redis-server")
START_TIMEOUT = 60.0


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> None:
    """``apt-get install`` PostgreSQL and Redis unless both are there (CI: a fresh Debian, as root)."""
    if _postgres_bin() is not None and shutil.which("redis-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            f"PostgreSQL and redis-server are missing; install them with "
            f"`apt-get install -y {' '.join(DEBIAN_PACKAGES)}` (needs root on Debian/Ubuntu)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]
    # The packages' scripts would start system-wide services (postgres on 5432, redis on 6379) that
    # nothing here stops; Debian's policy-rc.d hook (exit 101: "not allowed") keeps them stopped.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            # A fresh machine has no package lists yet.
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
    finally:
        if ours:
            policy.unlink(missing_ok=True)


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
        ensure_installed()
        bin_dir = self.bin_dir = _postgres_bin() or Path("/usr/bin")
        user = pwd.getpwnam(self.USER)
        os.chown(self.root, user.pw_uid, user.pw_gid)
        as_postgres: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", self.USER, "-E", "UTF8"],
            capture_output=True,
            check=True,
            cwd=self.root,
            **as_postgres,
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
            **as_postgres,
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
        ensure_installed()
        self.process = _spawn(
            [
                "redis-server",
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


if __name__ == "__main__":
    ensure_installed()
    print("PostgreSQL and redis-server are installed")


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
