"""Deterministic synthetic answers: token estimate, outcome markers, planned outcomes and Messages.

Everything here is a pure function of the request (plus a seed), so the same request always gets the
same answer, across runs and restarts.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_batches.emulator.ids import hashed_base62
from airflow_provider_batches.emulator.structured import (
    INVALID_OUTPUT_MARKER,
    answer_text,
    example_value,
    invalid_value,
    structured_ask,
)

TOKEN_RELEVANT_KEYS = ("system", "messages", "tools")
PER_MESSAGE_TOKENS = 4
BYTES_PER_TOKEN = 4

MARKER_RE = re.compile(r"\[emulator:(succeeded|canceled|expired|errored)(?:=([A-Za-z0-9_]+))?\]")
"""``[emulator:succeeded]``, ``[emulator:canceled]``, ``[emulator:expired]``, ``[emulator:errored=T]``."""

OutcomeKind = Literal["succeeded", "errored", "canceled", "expired"]
OUTCOME_CODES: dict[OutcomeKind, bytes] = {
    "succeeded": b"s",
    "errored": b"e",
    "canceled": b"c",
    "expired": b"x",
}
"""One byte per request in a batch's codes file: the planned outcome, before cancel/expiry apply."""


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def estimate_input_tokens(params: dict[str, Any]) -> int:
    """ceil(UTF-8 bytes of the canonical JSON of system/messages/tools / 4) + 4 per message."""
    relevant = {key: params[key] for key in TOKEN_RELEVANT_KEYS if key in params}
    size = len(canonical_json(relevant).encode("utf-8"))
    return math.ceil(size / BYTES_PER_TOKEN) + PER_MESSAGE_TOKENS * len(params.get("messages") or [])


def last_user_text(params: dict[str, Any]) -> str:
    """All text of the last user message (string content, or its text blocks joined by newlines)."""
    for message in reversed(params.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
            return "\n".join(t for t in texts if isinstance(t, str))
        return ""
    return ""


@dataclass(frozen=True)
class Marker:
    kind: OutcomeKind
    error_type: str | None


def find_marker(params: dict[str, Any]) -> Marker | None:
    """The first outcome marker in the last user message, if any."""
    match = MARKER_RE.search(last_user_text(params))
    if match is None:
        return None
    kind: OutcomeKind = match.group(1)  # type: ignore[assignment]
    error_type = (match.group(2) or "api_error") if kind == "errored" else None
    return Marker(kind, error_type)


@dataclass(frozen=True)
class PlannedOutcome:
    """What a batch request will end as if it is processed (cancel and expiry may still override)."""

    kind: OutcomeKind
    error_type: str | None = None
    error_message: str | None = None

    @property
    def code(self) -> bytes:
        return OUTCOME_CODES[self.kind]


def seeded_fraction(seed: int, custom_id: str) -> float:
    """A uniform draw in [0, 1) fixed by (seed, custom_id): the same request always gets the same draw."""
    digest = hashlib.sha256(f"{seed}:{custom_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def plan_outcome(
    custom_id: str,
    params: dict[str, Any],
    *,
    seed: int,
    errored_fraction: float,
    errored_type: str,
    known_model: bool,
) -> PlannedOutcome:
    """Marker first, then model check (async not_found_error), then the seeded errored fraction."""
    marker = find_marker(params)
    if marker is not None:
        if marker.kind == "errored":
            return PlannedOutcome("errored", marker.error_type, f"Emulated {marker.error_type} (marker).")
        return PlannedOutcome(marker.kind)
    if not known_model:
        return PlannedOutcome("errored", "not_found_error", f"model: {params['model']}")
    if errored_fraction > 0 and seeded_fraction(seed, custom_id) < errored_fraction:
        return PlannedOutcome("errored", errored_type, f"Emulated {errored_type} (errored fraction).")
    return PlannedOutcome("succeeded")


def build_message(params: dict[str, Any], *, message_id: str, service_tier: str) -> dict[str, Any]:
    """A ``Message`` whose text echoes the last user message, truncated at ``max_tokens``.

    Text: ``Emulated reply <12-char digest of the prompt>: <last user text>``; output_tokens =
    ceil(UTF-8 bytes / 4), capped at max_tokens (then the text is cut and stop_reason is max_tokens).
    A request asking for structured output gets JSON for its schema instead (see ``structured``).
    """
    prompt_digest = hashed_base62(canonical_json(params.get("messages")), 12)
    ask = structured_ask(params)
    invalid = INVALID_OUTPUT_MARKER in last_user_text(params)
    if ask is not None and ask.tool_name is not None:
        value = (invalid_value if invalid else example_value)(ask.schema, prompt_digest)
        block = {
            "type": "tool_use",
            "id": "toolu_emu_" + prompt_digest,
            "name": ask.tool_name,
            "input": value,
        }
        return _message(params, message_id, service_tier, [block], canonical_json(value), "tool_use")
    if ask is not None:
        text = answer_text(ask, prompt_digest, invalid=invalid)
    else:
        text = f"Emulated reply {prompt_digest}: {last_user_text(params)}"
    encoded = text.encode("utf-8")
    max_tokens: int = params["max_tokens"]
    stop_reason = "end_turn"
    if math.ceil(len(encoded) / BYTES_PER_TOKEN) > max_tokens:
        text = encoded[: max_tokens * BYTES_PER_TOKEN].decode("utf-8", errors="ignore")
        stop_reason = "max_tokens"
    return _message(params, message_id, service_tier, [{"type": "text", "text": text}], text, stop_reason)


def _message(
    params: dict[str, Any],
    message_id: str,
    service_tier: str,
    content: list[dict[str, Any]],
    output: str,
    stop_reason: str,
) -> dict[str, Any]:
    output_tokens = min(math.ceil(len(output.encode("utf-8")) / BYTES_PER_TOKEN), params["max_tokens"])
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": estimate_input_tokens(params),
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": service_tier,
        },
    }


def message_id_for(*parts: str) -> str:
    """``msg_emu_`` + 24 base62 chars derived from ``parts`` (stable across runs)."""
    return "msg_emu_" + hashed_base62("\x1f".join(parts), 24)


def request_id_for(*parts: str) -> str:
    """A stable ``req_emu_`` id for errored result lines."""
    return "req_emu_" + hashed_base62("\x1f".join(parts), 24)
