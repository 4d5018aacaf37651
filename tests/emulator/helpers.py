"""Small helpers shared by the emulator tests."""

from __future__ import annotations

from typing import Any

import anthropic

from airflow_provider_batches.emulator import Emulator

MODEL = "claude-emulator-test"
VERSION_HEADERS = {"anthropic-version": "2023-06-01"}


def batch_request(custom_id: str, text: str = "hello", **params: Any) -> Any:
    """One batch request entry with sensible defaults (typed Any: it stands in for the SDK TypedDict)."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def sdk_client(emu: Emulator, api_key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=api_key or emu.api_key, base_url=emu.base_url, max_retries=0)


def api_headers(emu: Emulator, **extra: str) -> dict[str, str]:
    """Headers for raw httpx calls: key + version (+ extra)."""
    return {"x-api-key": emu.api_key, **VERSION_HEADERS, **extra}
