"""Running the emulator: a uvicorn server on a socket we bind ourselves (so ``port=0`` gives a real port),
either in a background thread (``Emulator``, for tests) or in the foreground (the CLI).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from airflow_provider_batches.emulator.app import build_app
from airflow_provider_batches.emulator.clock import Clock
from airflow_provider_batches.emulator.config import EmulatorConfig
from airflow_provider_batches.emulator.state import EmulatorState

START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 15.0


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before uvicorn starts, so the port (even an OS-chosen one) is known and real."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def base_url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class NotifyingServer(uvicorn.Server):
    """A uvicorn server that calls ``on_started`` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_started()


KEEP_ALIVE_SECONDS = 75


def uvicorn_config(
    state: EmulatorState, *, log_level: str = "warning", access_log: bool = False
) -> uvicorn.Config:
    return uvicorn.Config(
        build_app(state),
        lifespan="off",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=2,
        # Idle connections stay open as long as a typical API front end keeps them (not uvicorn's 5 s),
        # so that pollers reuse them as they would against the real API.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


class AdminClient:
    """Talks to ``/_emulator/`` over HTTP: works for an in-process emulator and for one started by the CLI."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.request(
            method, f"{self.base_url}/_emulator/{path}", json=body, timeout=self._timeout
        )
        response.raise_for_status()
        data = response.json()
        assert isinstance(data, dict)
        return data

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def set_config(self, **changes: Any) -> dict[str, Any]:
        """Patch settings at run time, e.g. ``set_config(overloaded_fraction=1.0)``."""
        return self._call("POST", "config", changes)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def reset(self, *, batches: bool = False) -> dict[str, Any]:
        return self._call("POST", "reset" + ("?batches=true" if batches else ""))

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "clock", {"advance_seconds": seconds})


class Emulator:
    """The emulator in a background thread: ``with Emulator(config) as emu: ... emu.base_url``."""

    def __init__(self, config: EmulatorConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self._clock = clock
        self._state: EmulatorState | None = None
        self._server: NotifyingServer | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._base_url: str | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._base_url

    @property
    def api_key(self) -> str:
        """The first accepted API key (``sk-ant-emulator-key`` unless configured)."""
        return self.config.api_keys[0]

    @property
    def state(self) -> EmulatorState:
        """In-process access to config, clock, store and stats (tests)."""
        if self._state is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._state

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @property
    def admin(self) -> AdminClient:
        return AdminClient(self.base_url)

    def start(self) -> Emulator:
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._state = EmulatorState(self.config, self._clock)
        sock = bind_socket(self.config.host, self.config.port)
        self._server = NotifyingServer(uvicorn_config(self._state), self._started.set)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="anthropic-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._started.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                self.stop()
                raise RuntimeError("the emulator did not start")
        self._base_url = base_url_of(sock)
        self._socket = sock
        return self

    def stop(self) -> None:
        """Stop serving, wait for the thread, remove the temporary data directory."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
        if self._state is not None:
            self._state.close()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = self._thread = self._state = None
        self._base_url = None
        self._started.clear()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
