"""The /v1/ API routes: Messages, count_tokens and Message Batches, answering as API_SPEC.md says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_provider_batches.emulator import lifecycle
from airflow_provider_batches.emulator.admin import admin_routes
from airflow_provider_batches.emulator.answers import (
    build_message,
    canonical_json,
    estimate_input_tokens,
    find_marker,
    message_id_for,
)
from airflow_provider_batches.emulator.apierrors import (
    ERROR_STATUS,
    STATUS_ERROR_TYPE,
    ApiError,
    error_body,
    invalid_request,
    not_found,
    too_large,
)
from airflow_provider_batches.emulator.catalog import model_info, model_page
from airflow_provider_batches.emulator.config import EmulatorConfig
from airflow_provider_batches.emulator.hostile import HostileAnswers
from airflow_provider_batches.emulator.ids import rfc3339
from airflow_provider_batches.emulator.lifecycle import BatchRecord
from airflow_provider_batches.emulator.middleware import (
    SCOPE_ABORT,
    SCOPE_API_KEY,
    SCOPE_CUT_AFTER,
    SCOPE_OWNER,
    SCOPE_REQUEST_ID,
    AbortConnection,
    ApiGate,
)
from airflow_provider_batches.emulator.spool import spool_body
from airflow_provider_batches.emulator.state import EmulatorState
from airflow_provider_batches.emulator.validation import check_count_tokens_params, check_message_params

RESULTS_CHUNK_BYTES = 1 << 20
DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 1000


def build_app(state: EmulatorState) -> ASGIApp:
    """The whole emulator as one ASGI app: the gate around the API and admin routes."""
    handlers = ApiHandlers(state)
    routes = [
        Route("/v1/messages", handlers.create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", handlers.count_tokens, methods=["POST"]),
        Route("/v1/messages/batches", handlers.create_batch, methods=["POST"]),
        Route("/v1/messages/batches", handlers.list_batches, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", handlers.retrieve_batch, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", handlers.delete_batch, methods=["DELETE"]),
        Route("/v1/messages/batches/{batch_id}/cancel", handlers.cancel_batch, methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}/results", handlers.batch_results, methods=["GET"]),
        Route("/v1/models", handlers.list_models, methods=["GET"]),
        Route("/v1/models/{model_id}", handlers.retrieve_model, methods=["GET"]),
        *admin_routes(state),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error_response, HTTPException: _http_error_response},
    )
    return ApiGate(HostileAnswers(app, state), state)


def _request_id(request: Request) -> str | None:
    value = request.scope.get(SCOPE_REQUEST_ID)
    return value if isinstance(value, str) else None


async def _api_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body = error_body(exc.error_type, exc.message, _request_id(request))
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error_type = STATUS_ERROR_TYPE.get(exc.status_code, "invalid_request_error")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(error_body(error_type, message, _request_id(request)), status_code=exc.status_code)


def _require_json_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise invalid_request(f"content-type: expected application/json, got '{content_type or 'nothing'}'")


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON, read with a size cap (413 beyond it)."""
    _require_json_content_type(request)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise too_large(f"request body is {size} bytes; the limit is {limit} bytes")
    try:
        value = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_request(f"body: invalid JSON: {exc}") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\ud800"
        raise invalid_request(
            f"body: invalid JSON: lone surrogate {exc.object[exc.start]!r} in a string"
        ) from None
    return value


def _require_known_model(config: EmulatorConfig, model: str) -> None:
    if model not in config.models:
        raise not_found(f"model: {model}")


class ResultsFileResponse(Response):
    """Streams a results file from disk in chunks, with content-length, optionally cut after N bytes.

    The cut sends exactly N bytes of the body, then closes the connection: with content-length set,
    the client sees an incomplete body.
    """

    def __init__(
        self,
        path: Path,
        *,
        media_type: str,
        headers: dict[str, str],
        cut_after_bytes: int | None,
        abort: AbortConnection | None,
    ) -> None:  # no super().__init__(): there is no in-memory body
        self.path = path
        self.results_media_type = media_type
        self.extra_headers = headers
        self.cut_after_bytes = cut_after_bytes
        self.abort = abort

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.path.open("rb") as source:
            size = self.path.stat().st_size
            headers = {
                **self.extra_headers,
                "content-type": self.results_media_type,
                "content-length": str(size),
            }
            raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            cut_at = (
                self.cut_after_bytes
                if self.cut_after_bytes is not None and self.cut_after_bytes < size
                else None
            )
            sent = 0
            while True:
                chunk = await anyio.to_thread.run_sync(source.read, RESULTS_CHUNK_BYTES)
                if cut_at is not None and sent + len(chunk) >= cut_at:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": chunk[: cut_at - sent],
                            "more_body": True,
                        }
                    )
                    if self.abort is not None:
                        await self.abort()
                    return
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": bool(chunk)})
                if not chunk:
                    return


class ApiHandlers:
    """One method per endpoint; the gate has already authenticated the call."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _owner(self, request: Request) -> str:
        owner = request.scope[SCOPE_OWNER]
        assert isinstance(owner, str)
        return owner

    def _base_url(self, request: Request) -> str:
        """Where results live: the configured public URL, else the host the client used."""
        configured = self.state.config.public_base_url
        return (configured or str(request.base_url)).rstrip("/")

    def _batch_json(self, record: BatchRecord, request: Request) -> dict[str, Any]:
        now = self.state.clock.now()
        ended = record.ended_at is not None
        results_url = f"{self._base_url(request)}/v1/messages/batches/{record.id}/results" if ended else None
        return {
            "id": record.id,
            "type": "message_batch",
            "processing_status": lifecycle.processing_status(record),
            "request_counts": lifecycle.request_counts(record),
            "ended_at": rfc3339(record.ended_at) if record.ended_at is not None else None,
            "created_at": rfc3339(record.created_at),
            "expires_at": rfc3339(record.expires_at),
            "archived_at": rfc3339(record.archive_at) if lifecycle.is_archived(record, now) else None,
            "cancel_initiated_at": (
                rfc3339(record.cancel_initiated_at) if record.cancel_initiated_at is not None else None
            ),
            "results_url": results_url,
        }

    async def create_message(self, request: Request) -> Response:
        params = check_message_params(
            await _read_json(request, self.state.config.max_message_body_bytes), "", in_batch=False
        )
        _require_known_model(self.state.config, params["model"])
        marker = find_marker(params)
        if marker is not None and marker.kind == "errored" and marker.error_type is not None:
            status = ERROR_STATUS.get(marker.error_type, 500)
            raise ApiError(status, marker.error_type, f"Emulated {marker.error_type} (marker).")
        message_id = message_id_for("messages", canonical_json(params))
        return JSONResponse(build_message(params, message_id=message_id, service_tier="standard"))

    async def count_tokens(self, request: Request) -> Response:
        params = check_count_tokens_params(
            await _read_json(request, self.state.config.max_message_body_bytes)
        )
        _require_known_model(self.state.config, params["model"])
        return JSONResponse({"input_tokens": estimate_input_tokens(params)})

    async def create_batch(self, request: Request) -> Response:
        _require_json_content_type(request)
        state = self.state
        config = state.config
        body_path = state.store.new_body_path()
        try:
            await spool_body(request.stream(), body_path, config.max_batch_body_bytes)
            record = await anyio.to_thread.run_sync(
                state.store.create, self._owner(request), body_path, config, state.clock.now()
            )
        finally:
            body_path.unlink(missing_ok=True)
        api_key = request.scope[SCOPE_API_KEY]
        state.stats.record_batch(state.key_label(api_key), record.request_count)
        return JSONResponse(self._batch_json(record, request))

    async def list_batches(self, request: Request) -> Response:
        query = request.query_params
        limit = _parse_limit(query.get("limit"))
        page, has_more = self.state.store.page(
            self._owner(request),
            self.state.clock.now(),
            before_id=query.get("before_id") or None,
            after_id=query.get("after_id") or None,
            limit=limit,
        )
        return JSONResponse(
            {
                "data": [self._batch_json(record, request) for record in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": has_more,
            }
        )

    async def list_models(self, request: Request) -> Response:
        query = request.query_params
        return JSONResponse(
            model_page(
                self.state.config,
                limit=_parse_limit(query.get("limit")),
                after_id=query.get("after_id") or None,
                before_id=query.get("before_id") or None,
            )
        )

    async def retrieve_model(self, request: Request) -> Response:
        return JSONResponse(model_info(request.path_params["model_id"], self.state.config))

    async def retrieve_batch(self, request: Request) -> Response:
        record = self.state.store.get(
            self._owner(request), request.path_params["batch_id"], self.state.clock.now()
        )
        return JSONResponse(self._batch_json(record, request))

    async def cancel_batch(self, request: Request) -> Response:
        record = self.state.store.cancel(
            self._owner(request), request.path_params["batch_id"], self.state.clock.now()
        )
        return JSONResponse(self._batch_json(record, request))

    async def delete_batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        self.state.store.delete(self._owner(request), batch_id, self.state.clock.now())
        return JSONResponse({"id": batch_id, "type": "message_batch_deleted"})

    async def batch_results(self, request: Request) -> Response:
        state = self.state
        future = state.store.results_file(
            self._owner(request), request.path_params["batch_id"], state.clock.now(), state.config
        )
        path = await asyncio.wrap_future(future)
        if not path.exists():
            raise not_found(f"message_batch_id: results of '{request.path_params['batch_id']}' are gone")
        accept = request.headers.get("accept", "")
        media_type = "application/binary" if "application/binary" in accept else "application/x-jsonl"
        abort = request.scope.get(SCOPE_ABORT)
        return ResultsFileResponse(
            path,
            media_type=media_type,
            headers={},
            cut_after_bytes=request.scope.get(SCOPE_CUT_AFTER),
            abort=abort,
        )


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if limit < 1:
        raise invalid_request("limit: Input should be greater than or equal to 1")
    if limit > MAX_PAGE_LIMIT:
        raise invalid_request(f"limit: Input should be less than or equal to {MAX_PAGE_LIMIT}")
    return limit
