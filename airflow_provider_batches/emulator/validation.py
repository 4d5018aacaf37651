"""Synchronous request checks, with pydantic-style messages that name the field by its dotted path.

Only shape is checked here (types, required and unknown keys, limits). Semantics such as an unknown
model are answered later: synchronously on /v1/messages, as ``errored`` result lines inside batches.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_batches.emulator.apierrors import ApiError, invalid_request

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)

MESSAGE_REQUIRED = ("model", "max_tokens", "messages")
MESSAGE_OPTIONAL = frozenset(
    {
        "system",
        "metadata",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "stream",
        "container",
        "mcp_servers",
        "context_management",
        # Also in the SDK's MessageCreateParams (anthropic 2.12).
        "cache_control",
        "diagnostics",
        "inference_geo",
        "output_config",
        "speed",
        "user_profile_id",
        "workspace_id",
    }
)
COUNT_TOKENS_REQUIRED = ("model", "messages")
COUNT_TOKENS_OPTIONAL = frozenset(
    {"system", "tools", "tool_choice", "thinking", "mcp_servers", "context_management", "output_config"}
)
BATCH_ITEM_KEYS = ("custom_id", "params")


def field_path(prefix: str, key: str | int) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _fail(path: str, message: str) -> ApiError:
    return invalid_request(f"{path}: {message}")


def _require_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "Input should be a valid dictionary")
    return value


def _check_keys(obj: dict[str, Any], path: str, required: tuple[str, ...], optional: frozenset[str]) -> None:
    for key in required:
        if key not in obj:
            raise _fail(field_path(path, key), "Field required")
    allowed = optional.union(required)
    for key in obj:
        if key not in allowed:
            raise _fail(field_path(path, key), "Extra inputs are not permitted")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_messages(messages: object, path: str) -> None:
    if not isinstance(messages, list):
        raise _fail(path, "Input should be a valid list")
    if not messages:
        raise _fail(path, "List should have at least 1 item after validation, not 0")
    for index, message in enumerate(messages):
        item_path = field_path(path, index)
        item = _require_object(message, item_path)
        _check_keys(item, item_path, ("role", "content"), frozenset())
        if item["role"] not in ("user", "assistant", "system"):
            raise _fail(field_path(item_path, "role"), "Input should be 'user', 'assistant' or 'system'")
        content = item["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _fail(field_path(item_path, "content"), "Input should be a valid string or list")
        for block_index, block in enumerate(content):
            block_path = field_path(field_path(item_path, "content"), block_index)
            if not isinstance(_require_object(block, block_path).get("type"), str):
                raise _fail(field_path(block_path, "type"), "Field required")


def _check_common(params: dict[str, Any], path: str) -> None:
    """Checks shared by message params and count_tokens params."""
    if not isinstance(params["model"], str):
        raise _fail(field_path(path, "model"), "Input should be a valid string")
    _check_messages(params["messages"], field_path(path, "messages"))
    system = params.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _fail(field_path(path, "system"), "Input should be a valid string or list")
    for list_key in ("tools", "mcp_servers"):
        if list_key in params and not isinstance(params[list_key], list):
            raise _fail(field_path(path, list_key), "Input should be a valid list")
    for object_key in ("tool_choice", "thinking", "metadata", "context_management", "output_config"):
        if object_key in params and not isinstance(params[object_key], dict):
            raise _fail(field_path(path, object_key), "Input should be a valid dictionary")


def check_message_params(value: object, path: str, *, in_batch: bool) -> dict[str, Any]:
    """Validate Messages params (``POST /v1/messages`` body, or ``requests.N.params`` in a batch)."""
    params = _require_object(value, path or "body")
    _check_keys(params, path, MESSAGE_REQUIRED, MESSAGE_OPTIONAL)
    _check_common(params, path)
    max_tokens = params["max_tokens"]
    if not _is_int(max_tokens):
        raise _fail(field_path(path, "max_tokens"), "Input should be a valid integer")
    if max_tokens < 1:
        raise _fail(field_path(path, "max_tokens"), "Input should be greater than or equal to 1")
    stream = params.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail(field_path(path, "stream"), "Input should be a valid boolean")
    if stream:
        reason = (
            "Stream mode is not supported in message batches" if in_batch else "streaming is not emulated"
        )
        raise _fail(field_path(path, "stream"), reason)
    for unit_key in ("temperature", "top_p"):
        if unit_key in params:
            number = params[unit_key]
            if not _is_number(number) or not 0 <= number <= 1:
                raise _fail(field_path(path, unit_key), "Input should be a number between 0 and 1")
    if "top_k" in params and (not _is_int(params["top_k"]) or params["top_k"] < 0):
        raise _fail(field_path(path, "top_k"), "Input should be a non-negative integer")
    stops = params.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        raise _fail(field_path(path, "stop_sequences"), "Input should be a valid list of strings")
    return params


def check_count_tokens_params(value: object) -> dict[str, Any]:
    """Validate a ``POST /v1/messages/count_tokens`` body (no ``max_tokens``, fewer keys)."""
    params = _require_object(value, "body")
    _check_keys(params, "", COUNT_TOKENS_REQUIRED, COUNT_TOKENS_OPTIONAL)
    _check_common(params, "")
    return params


def check_custom_id(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "Input should be a valid string")
    if len(value) > 64:
        raise _fail(path, "String should have at most 64 characters")
    if not value:
        raise _fail(path, "String should have at least 1 character")
    if not _CUSTOM_ID_RE.fullmatch(value):  # "abc\n" matches "...$" with re.match
        raise _fail(path, f"String should match pattern '{CUSTOM_ID_PATTERN}'")
    return value


def check_batch_item(item: object, index: int, first_seen: dict[str, int]) -> tuple[str, dict[str, Any]]:
    """Validate ``requests.N`` and record its custom_id in ``first_seen`` (custom_id -> first index)."""
    path = f"requests.{index}"
    obj = _require_object(item, path)
    _check_keys(obj, path, BATCH_ITEM_KEYS, frozenset())
    custom_id_path = field_path(path, "custom_id")
    custom_id = check_custom_id(obj["custom_id"], custom_id_path)
    params = check_message_params(obj["params"], field_path(path, "params"), in_batch=True)
    earlier = first_seen.get(custom_id)
    if earlier is not None:
        raise _fail(custom_id_path, f"duplicate custom_id '{custom_id}' (first seen at requests.{earlier})")
    first_seen[custom_id] = index
    return custom_id, params
