"""Scripted HTTP answers for hook tests (httpx.MockTransport), and API object builders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

API_KEY = "sk-ant-test-SECRET-a1b2c3d4e5"
BASE_URL = "http://api.test"


class Recorder:
    """An httpx.MockTransport that answers from a script and records every request."""

    def __init__(
        self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response] | Exception
    ) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def error(status: int, error_type: str, message: str = "boom", **headers: str) -> httpx.Response:
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_test"}
    return httpx.Response(status, json=body, headers=headers)


def batch_json(
    batch_id: str = "msgbatch_1", *, status: str = "in_progress", total: int = 2, **fields: Any
) -> dict[str, Any]:
    counts = {"processing": total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if status == "ended":
        counts = {"processing": 0, "succeeded": total, "errored": 0, "canceled": 0, "expired": 0}
    batch = {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": "2026-11-22T10:00:00Z",
        "expires_at": "2026-11-23T10:00:00Z",
        "ended_at": "2026-11-22T10:05:00Z" if status == "ended" else None,
        "cancel_initiated_at": None,
        "archived_at": None,
        "results_url": f"{BASE_URL}/v1/messages/batches/{batch_id}/results" if status == "ended" else None,
    }
    batch.update(fields)
    return batch


def listing_json(*batches: Mapping[str, Any], has_more: bool = False) -> dict[str, Any]:
    """A page of ``GET /v1/messages/batches`` holding ``batches``."""
    ids = [batch["id"] for batch in batches]
    return {
        "data": list(batches),
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
        "has_more": has_more,
    }
