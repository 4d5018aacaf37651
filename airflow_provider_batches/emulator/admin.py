"""The admin endpoint under ``/_emulator/``: read and patch config, read stats, reset, move the clock.

No API key is needed and faults never apply here, so a test can always reach it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_batches.emulator.apierrors import ApiError, invalid_request
from airflow_provider_batches.emulator.ids import rfc3339
from airflow_provider_batches.emulator.state import EmulatorState


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise invalid_request(f"body: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid_request("body: Input should be a valid dictionary")
    return data


def admin_routes(state: EmulatorState) -> list[Route]:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "now": rfc3339(state.clock.now())})

    async def get_config(request: Request) -> Response:
        return JSONResponse(state.config.runtime_view())

    async def patch_config(request: Request) -> Response:
        changes = await _json_object(request)
        try:
            config = state.patch_config(changes)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise invalid_request(problems) from None
        except ValueError as exc:
            raise invalid_request(str(exc)) from None
        return JSONResponse(config.runtime_view())

    async def get_stats(request: Request) -> Response:
        return JSONResponse(state.stats.snapshot())

    async def reset(request: Request) -> Response:
        batches = request.query_params.get("batches", "").lower() in ("1", "true", "yes")
        state.reset(batches=batches)
        return JSONResponse({"reset": True, "batches_cleared": batches})

    async def clock(request: Request) -> Response:
        changes = await _json_object(request)
        seconds = changes.get("advance_seconds", 0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ApiError(400, "invalid_request_error", "advance_seconds: Input should be a number >= 0")
        settle = changes.get("settle", False)
        if not isinstance(settle, bool):
            raise ApiError(400, "invalid_request_error", "settle: Input should be a valid boolean")
        state.clock.advance(float(seconds))
        now = state.clock.now()
        answer: dict[str, Any] = {"now": rfc3339(now)}
        if settle:
            answer["ended"] = state.store.settle(now)
        return JSONResponse(answer)

    return [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/config", get_config, methods=["GET"]),
        Route("/_emulator/config", patch_config, methods=["POST", "PATCH"]),
        Route("/_emulator/stats", get_stats, methods=["GET"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/clock", clock, methods=["POST"]),
    ]
