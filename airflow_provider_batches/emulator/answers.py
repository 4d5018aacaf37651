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

import msgspec

from airflow_provider_batches.emulator.ids import hashed_base62
from airflow_provider_batches.emulator.structured import (
    INVALID_OUTPUT_MARKER,
    answer_text,
    example_value,
    invalid_value,
    structured_ask,
)

TOKEN_RELEVANT_KEYS = ("messages", "system", "tools")  # sorted: the order canonical JSON writes them
PER_MESSAGE_TOKENS = 4
BYTES_PER_TOKEN = 4

MARKER_RE = re.compile(
    r"\[emulator:(succeeded|canceled|expired|errored)(?:_(once|twice))?(?:=([A-Za-z0-9_]+))?\]"
)
"""``[emulator:succeeded]``, ``[emulator:canceled]``, ``[emulator:expired]``, ``[emulator:errored=T]``;
with ``_once`` or ``_twice`` (``[emulator:errored_once=overloaded_error]``, ``[emulator:expired_twice]``)
the outcome applies to the first one or two attempts of the request only, and later attempts succeed."""

#: How many attempts a transient marker spoils.
TRANSIENT_ATTEMPTS = {"once": 1, "twice": 2}

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


class DecodedFloat(float):
    """A float of a request decoded by :data:`REQUEST_DECODER`. msgspec refuses to encode it, so
    :func:`canonical_json_bytes` gives such values to ``json.dumps``: msgspec writes floats in other
    words (``1e16`` for ``1e+16``), and answers must not depend on which encoder made them."""


#: Decodes a spooled request line; its floats become :class:`DecodedFloat`.
REQUEST_DECODER = msgspec.json.Decoder(float_hook=DecodedFloat)
_SORTED_ENCODER = msgspec.json.Encoder(order="sorted")


def canonical_json_bytes(value: Any) -> bytes:
    """``canonical_json(value)`` in UTF-8, by msgspec (its strings escape as ``json.dumps``'s do) unless
    the value holds a float. For values decoded by :data:`REQUEST_DECODER` only: a plain float would be
    written in msgspec's words."""
    try:
        return _SORTED_ENCODER.encode(value)
    except TypeError:
        return canonical_json(value).encode("utf-8")


def estimate_input_tokens(params: dict[str, Any], messages_json: bytes | None = None) -> int:
    """ceil(UTF-8 bytes of the canonical JSON of system/messages/tools / 4) + 4 per message.

    ``messages_json``: ``canonical_json_bytes(params["messages"])``, given for params decoded by
    :data:`REQUEST_DECODER`: then the size is added up from the parts, nothing encoded twice.
    """
    if messages_json is None or "messages" not in params:
        relevant = {key: params[key] for key in TOKEN_RELEVANT_KEYS if key in params}
        size = len(canonical_json(relevant).encode("utf-8"))
    else:  # '{' + ','.join('"key":' + value, in key order) + '}'
        size = 1 + sum(
            len(key) + 4 + len(messages_json if key == "messages" else canonical_json_bytes(params[key]))
            for key in TOKEN_RELEVANT_KEYS
            if key in params
        )
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
    #: For a transient marker, the attempts it applies to (then the request succeeds); None: always.
    attempts: int | None = None


def find_marker(params: dict[str, Any]) -> Marker | None:
    """The first outcome marker in the last user message, if any."""
    match = MARKER_RE.search(last_user_text(params))
    if match is None:
        return None
    kind: OutcomeKind = match.group(1)  # type: ignore[assignment]
    error_type = (match.group(3) or "api_error") if kind == "errored" else None
    attempts = TRANSIENT_ATTEMPTS[match.group(2)] if match.group(2) else None
    return Marker(kind, error_type, attempts)


def is_transient_marked(params: dict[str, Any]) -> bool:
    """Whether the request's outcome depends on its attempt (so the store counts its attempts)."""
    marker = find_marker(params)
    return marker is not None and marker.attempts is not None


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
    attempt: int = 1,
) -> PlannedOutcome:
    """Marker first, then model check (async not_found_error), then the seeded errored fraction.

    ``attempt`` counts this request's submissions (same key, custom_id and params): a transient
    marker applies to its first attempts only.
    """
    marker = find_marker(params)
    if marker is not None and (marker.attempts is None or attempt <= marker.attempts):
        if marker.kind == "errored":
            return PlannedOutcome("errored", marker.error_type, f"Emulated {marker.error_type} (marker).")
        return PlannedOutcome(marker.kind)
    if not known_model:
        return PlannedOutcome("errored", "not_found_error", f"model: {params['model']}")
    if errored_fraction > 0 and seeded_fraction(seed, custom_id) < errored_fraction:
        return PlannedOutcome("errored", errored_type, f"Emulated {errored_type} (errored fraction).")
    return PlannedOutcome("succeeded")


def build_message(
    params: dict[str, Any], *, message_id: str, service_tier: str, cache_seen: set[str] | None = None
) -> dict[str, Any]:
    """A ``Message`` whose text echoes the last user message, truncated at ``max_tokens``.

    A request with ``cache_control`` blocks has its cached prefix (:func:`cached_prefix_tokens`)
    billed as ``cache_creation_input_tokens`` the first time ``cache_seen`` meets that prefix and as
    ``cache_read_input_tokens`` after; ``input_tokens`` is the rest of the prompt.

    Text: ``Emulated reply <12-char digest of the prompt>: <last user text, without markers>``;
    output_tokens = ceil(UTF-8 bytes / 4), capped at max_tokens (then the text is cut and stop_reason
    is max_tokens).
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
        output = canonical_json(value)
        return _message(params, message_id, service_tier, [block], output, "tool_use", cache_seen)
    if ask is not None:
        text, stop_reason = fit_max_tokens(
            answer_text(ask, prompt_digest, invalid=invalid), params["max_tokens"]
        )
    else:
        text, stop_reason = free_text_answer(params, prompt_digest)
    content = [{"type": "text", "text": text}]
    return _message(params, message_id, service_tier, content, text, stop_reason, cache_seen)


def echoed_user_text(params: dict[str, Any]) -> str:
    """The last user message's text without markers (a demo shows no "[emulator:...]"), each run of
    whitespace made one space."""
    text = last_user_text(params)
    if "[emulator:" in text:
        text = MARKER_RE.sub(" ", text)
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # already what split and join would make: every other whitespace is unprintable
    return " ".join(text.split())


def free_text_answer(params: dict[str, Any], prompt_digest: str) -> tuple[str, str]:
    """``Emulated reply <digest>: <echoed text>``, cut at ``max_tokens``; and its stop_reason."""
    return fit_max_tokens(f"Emulated reply {prompt_digest}: {echoed_user_text(params)}", params["max_tokens"])


def fit_max_tokens(text: str, max_tokens: int) -> tuple[str, str]:
    """The answer and its stop_reason: ``end_turn``, or cut to ``max_tokens`` tokens of 4 bytes (never
    mid-character) and ``max_tokens``."""
    encoded = text.encode("utf-8")
    if math.ceil(len(encoded) / BYTES_PER_TOKEN) <= max_tokens:
        return text, "end_turn"
    return encoded[: max_tokens * BYTES_PER_TOKEN].decode("utf-8", errors="ignore"), "max_tokens"


def output_tokens_of(output: str, max_tokens: int) -> int:
    """ceil(UTF-8 bytes of the answer / 4), at most ``max_tokens``."""
    return min(math.ceil(len(output.encode("utf-8")) / BYTES_PER_TOKEN), max_tokens)


def _message(
    params: dict[str, Any],
    message_id: str,
    service_tier: str,
    content: list[dict[str, Any]],
    output: str,
    stop_reason: str,
    cache_seen: set[str] | None = None,
) -> dict[str, Any]:
    output_tokens = output_tokens_of(output, params["max_tokens"])
    input_tokens = estimate_input_tokens(params)
    cached = min(cached_prefix_tokens(params), input_tokens)
    cache_creation = cache_read = 0
    one_hour = cached_prefix_ttl(params) == "1h"
    if cached:
        prefix = cached_prefix_digest(params)
        if cache_seen is not None and prefix in cache_seen:
            cache_read = cached
        else:
            cache_creation = cached
            if cache_seen is not None:
                cache_seen.add(prefix)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens - cached,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_creation,
            "cache_read_input_tokens": cache_read,
            # The writes by lifetime (the SDK's ``Usage.cache_creation``): the last breakpoint's ``ttl``.
            "cache_creation": {
                "ephemeral_5m_input_tokens": 0 if one_hour else cache_creation,
                "ephemeral_1h_input_tokens": cache_creation if one_hour else 0,
            },
            "service_tier": service_tier,
        },
    }


def _cache_prefix(params: dict[str, Any]) -> list[Any]:
    """The prompt's parts in cache order (tools, system, message blocks) up to the last ``cache_control``."""
    parts: list[Any] = list(params.get("tools") or [])
    system = params.get("system")
    if isinstance(system, list):
        parts += system
    for message in params.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        parts += content if isinstance(content, list) else [content]
    last = max(
        (i for i, part in enumerate(parts) if isinstance(part, dict) and "cache_control" in part), default=-1
    )
    return parts[: last + 1]


def cached_prefix_ttl(params: dict[str, Any]) -> str | None:
    """The ``ttl`` of the cached prefix's last breakpoint (``"5m"`` when not given, None without one)."""
    prefix = _cache_prefix(params)
    if not prefix:
        return None
    control = prefix[-1]["cache_control"]
    return str(control.get("ttl") or "5m") if isinstance(control, dict) else "5m"


def cached_prefix_tokens(params: dict[str, Any]) -> int:
    """ceil(UTF-8 bytes of the canonical JSON of the cached prefix / 4); 0 without ``cache_control``."""
    prefix = _cache_prefix(params)
    return math.ceil(len(canonical_json(prefix).encode("utf-8")) / BYTES_PER_TOKEN) if prefix else 0


def cached_prefix_digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json([params.get("model"), _cache_prefix(params)]).encode()).hexdigest()


def message_id_for(*parts: str) -> str:
    """``msg_emu_`` + 24 base62 chars derived from ``parts`` (stable across runs)."""
    return "msg_emu_" + hashed_base62("\x1f".join(parts), 24)


def request_id_for(*parts: str) -> str:
    """A stable ``req_emu_`` id for errored result lines."""
    return "req_emu_" + hashed_base62("\x1f".join(parts), 24)
