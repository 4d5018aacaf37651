"""The gate every /v1/ call passes: request id, authentication, version header, rate limit, faults, stats.

It is a raw ASGI wrapper (not Starlette middleware) because two faults need the server's transport:
a dropped connection (closed before any answer) and a results stream cut after N bytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_batches.emulator.apierrors import STATUS_ERROR_TYPE, error_body
from airflow_provider_batches.emulator.faults import TERMINAL_FAULTS, FaultDecision
from airflow_provider_batches.emulator.ids import new_request_id, rfc3339
from airflow_provider_batches.emulator.state import EmulatorState
from airflow_provider_batches.emulator.stats import route_label
from airflow_provider_batches.emulator.store import owner_of

# Keys this gate puts into the ASGI scope for the handlers.
SCOPE_REQUEST_ID = "emulator.request_id"
SCOPE_API_KEY = "emulator.api_key"
SCOPE_OWNER = "emulator.owner"
SCOPE_CUT_AFTER = "emulator.cut_after_bytes"
SCOPE_ABORT = "emulator.abort"

AbortConnection = Callable[[], Awaitable[None]]
DISCONNECT_WAIT_SECONDS = 5.0


def header_values(scope: Scope, name: str) -> list[str]:
    wanted = name.encode("latin-1")
    return [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == wanted]


def betas_of(scope: Scope) -> list[str]:
    """``anthropic-beta`` as a list: comma-separated values and repeated headers both count."""
    return [
        beta.strip()
        for value in header_values(scope, "anthropic-beta")
        for beta in value.split(",")
        if beta.strip()
    ]


def api_key_of(scope: Scope) -> str | None:
    keys = header_values(scope, "x-api-key")
    if keys:
        return keys[0]
    for value in header_values(scope, "authorization"):
        if value.lower().startswith("bearer "):
            return value[7:].strip()
    return None


def abort_for(raw_send: Send) -> AbortConnection:
    """A coroutine function that closes the client connection at once (uvicorn's transport)."""
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)

    async def abort() -> None:
        if transport is None:
            raise ConnectionAbortedError("emulator fault: connection dropped")
        transport.close()
        deadline = time.monotonic() + DISCONNECT_WAIT_SECONDS
        while not getattr(cycle, "disconnected", True) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # let the server notice, so it does not answer 500 itself

    return abort


class ApiGate:
    """Wraps the Starlette app; only /v1/ paths are gated, /_emulator/ passes straight through."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope[SCOPE_REQUEST_ID] = request_id
        if not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, _with_headers(send, {"request-id": request_id}, None))
            return
        await self._gated(scope, receive, send, request_id)

    async def _gated(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        state = self.state
        config = state.config
        label = route_label(scope["method"], scope["path"])
        extra_headers = {"request-id": request_id}
        counted_send = _with_headers(
            send, extra_headers, lambda status: state.stats.record_call(label, status, state.clock.now())
        )
        state.stats.record_betas(betas_of(scope))

        api_key = api_key_of(scope)
        if api_key is None:
            await _error(
                counted_send, 401, "authentication_error", "x-api-key header is required", request_id
            )
            return
        if not state.is_accepted_key(api_key):
            await _error(counted_send, 401, "authentication_error", "invalid x-api-key", request_id)
            return
        if not header_values(scope, "anthropic-version"):
            message = "anthropic-version: header is required"
            await _error(counted_send, 400, "invalid_request_error", message, request_id)
            return
        owner = owner_of(api_key)
        scope[SCOPE_API_KEY] = api_key
        scope[SCOPE_OWNER] = owner

        is_results = scope["method"] == "GET" and scope["path"].endswith("/results")
        is_create = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/messages/batches"
        if scope["path"].startswith("/v1/models") and not config.faults_on_models_api:
            decision = FaultDecision()  # no draw: scripted faults keep addressing the paid calls
        else:
            decision = state.faults.decide(config, is_results_download=is_results, is_create=is_create)
        state.stats.record_faults(decision.names, label)

        is_count_tokens = scope["path"].rstrip("/").endswith("/count_tokens")
        limit = config.count_tokens_requests_per_minute if is_count_tokens else config.requests_per_minute
        if limit > 0 or decision.rate_limited:
            bucket = "count_tokens" if is_count_tokens else "default"
            verdict = state.rate_limiter.check(owner, bucket, max(limit, 1), state.clock.now())
            if limit > 0:
                extra_headers["anthropic-ratelimit-requests-limit"] = str(verdict.limit)
                extra_headers["anthropic-ratelimit-requests-remaining"] = str(verdict.remaining)
                extra_headers["anthropic-ratelimit-requests-reset"] = rfc3339(verdict.reset_at)
            if not verdict.allowed or decision.rate_limited:
                if limit > 0 and not decision.rate_limited:
                    state.stats.record_faults(["429"], label)
                retry_after = verdict.retry_after_seconds or 1
                headers = {"retry-after": str(retry_after), "x-should-retry": "true"}
                if config.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(config.retry_after_ms)
                message = f"rate limit exceeded: {limit or 1} requests per minute"
                await _error(counted_send, 429, "rate_limit_error", message, request_id, headers)
                return

        if decision.drop:
            await abort_for(send)()
            return
        if decision.slow_seconds > 0:
            await asyncio.sleep(decision.slow_seconds)
        if decision.status is not None:
            await _injected_error(counted_send, decision, request_id, config.retry_after_ms)
            return
        if decision.terminal is not None:
            fault = TERMINAL_FAULTS[decision.terminal]
            await _error(
                counted_send,
                fault.status,
                fault.error_type,
                fault.message,
                request_id,
                error_code=fault.error_code,
            )
            return
        if decision.lose_answer is not None:
            await self._act_then_lose_answer(scope, receive, send, counted_send, decision, request_id)
            return
        scope[SCOPE_CUT_AFTER] = decision.cut_after_bytes
        scope[SCOPE_ABORT] = abort_for(send)
        await self.app(scope, receive, counted_send)

    async def _act_then_lose_answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        counted_send: Send,
        decision: FaultDecision,
        request_id: str,
    ) -> None:
        """The server does the work (a create makes its batch), then its answer never arrives."""

        async def discard(message: Message) -> None:
            return None

        scope[SCOPE_CUT_AFTER] = None
        scope[SCOPE_ABORT] = abort_for(send)
        await self.app(scope, receive, discard)
        if decision.lose_answer == "drop":
            await abort_for(send)()
            return
        await _injected_error(
            counted_send, FaultDecision(status=500), request_id, self.state.config.retry_after_ms
        )


async def _injected_error(
    send: Send, decision: FaultDecision, request_id: str, retry_after_ms: int | None
) -> None:
    assert decision.status is not None
    headers = {"x-should-retry": "true"}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    error_type = STATUS_ERROR_TYPE[decision.status]
    message = f"emulated {error_type} (fault injection)"
    await _error(send, decision.status, error_type, message, request_id, headers)


async def _error(
    send: Send,
    status: int,
    error_type: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    *,
    error_code: str | None = None,
) -> None:
    body = json.dumps(error_body(error_type, message, request_id, error_code=error_code)).encode("utf-8")
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send, headers: dict[str, str], on_status: Callable[[int], None] | None) -> Send:
    """Add ``headers`` to the response start (read when sent, so later additions count); report the status."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            added: list[Any] = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()
                if name.encode("latin-1") not in present
            ]
            message = {**message, "headers": [*message.get("headers", []), *added]}
            if on_status is not None:
                on_status(message["status"])
        await send(message)

    return wrapped
