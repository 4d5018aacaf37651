"""Result lines of an ended batch, produced one at a time from the request spool.

Lines are written with each pair of neighbours swapped (request 1, 0, 3, 2, ...): the API promises no
order, and a client that assumes submission order should fail against the emulator too.

A million results must take seconds, not minutes: each request line is decoded by msgspec, and the
common answer (free text, no cached prefix) is put into a byte-for-byte template of what ``json.dumps``
writes for :func:`result_for`'s dict; every other line takes :func:`result_for` itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from airflow_provider_batches.emulator import lifecycle
from airflow_provider_batches.emulator.answers import (
    OUTCOME_CODES,
    REQUEST_DECODER,
    build_message,
    canonical_json_bytes,
    estimate_input_tokens,
    free_text_answer,
    message_id_for,
    output_tokens_of,
    plan_outcome,
    request_id_for,
)
from airflow_provider_batches.emulator.ids import hashed_base62
from airflow_provider_batches.emulator.lifecycle import BatchRecord

#: A JSON string in UTF-8: msgspec escapes every character as ``json.dumps(..., ensure_ascii=False)`` does.
_json_string = msgspec.json.encode
_SUCCEEDED = OUTCOME_CODES["succeeded"][0]
#: Requests whose answer is not plain text, or depends on the requests before them (a cached prefix).
_NOT_PLAIN_PARAMS = ("output_config", "tool_choice")
_NOT_PLAIN_BYTES = b"cache_control"


def result_for(
    record: BatchRecord,
    index: int,
    planned_code: int,
    request: dict[str, Any],
    cache_seen: set[str] | None = None,
) -> dict[str, Any]:
    """``{"custom_id": ..., "result": {...}}`` for one request of an ended batch.

    ``cache_seen`` holds the cached prompt prefixes met so far in the batch (cache creation, then reads).
    """
    custom_id: str = request["custom_id"]
    params: dict[str, Any] = request["params"]
    kind = lifecycle.final_outcome(planned_code, index, record)
    if kind == "succeeded":
        message = build_message(
            params,
            message_id=message_id_for(record.id, custom_id),
            service_tier="batch",
            cache_seen=cache_seen,
        )
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
    if kind == "errored":
        plan = plan_outcome(
            custom_id,
            params,
            seed=record.plan_seed,
            errored_fraction=record.errored_fraction,
            errored_type=record.errored_type,
            known_model=params["model"] not in record.unknown_models,
        )
        error = {
            "type": "error",
            "error": {"type": plan.error_type, "message": plan.error_message},
            "request_id": request_id_for(record.id, custom_id),
        }
        return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
    return {"custom_id": custom_id, "result": {"type": kind}}


def plain_succeeded_line(batch_id: str, custom_id: str, params: dict[str, Any]) -> bytes:
    """The line ``json.dumps(result_for(...), ensure_ascii=False)`` writes for a succeeded free-text
    answer without a cached prefix, from a template (``test_results_generation`` holds them equal).
    ``params`` decoded by ``REQUEST_DECODER``."""
    messages_json = canonical_json_bytes(params["messages"])
    text, stop_reason = free_text_answer(params, hashed_base62(messages_json, 12))
    return b"".join(
        (
            b'{"custom_id": ',
            _json_string(custom_id),
            b', "result": {"type": "succeeded", "message": {"id": "',
            message_id_for(batch_id, custom_id).encode(),
            b'", "type": "message", "role": "assistant", "model": ',
            _json_string(params["model"]),
            b', "content": [{"type": "text", "text": ',
            _json_string(text),
            b'}], "stop_reason": "',
            stop_reason.encode(),
            b'", "stop_sequence": null, "usage": {"input_tokens": ',
            b"%d" % estimate_input_tokens(params, messages_json),
            b', "output_tokens": ',
            b"%d" % output_tokens_of(text, params["max_tokens"]),
            b', "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation": '
            b'{"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}, "service_tier": "batch"}}}}',
        )
    )


def _mentions_cache_control(line: bytes, request: dict[str, Any]) -> bool:
    """Whether the request names ``cache_control`` anywhere: its line is the client's own JSON text, which
    may spell the key with escapes (``cache\\u005fcontrol``), so such a line is judged re-encoded."""
    if _NOT_PLAIN_BYTES in line:
        return True
    return b"\\u" in line and _NOT_PLAIN_BYTES in msgspec.json.encode(request)


def _decode_request(line: bytes) -> dict[str, Any]:
    try:
        request: dict[str, Any] = REQUEST_DECODER.decode(line)
    except msgspec.DecodeError:  # a line msgspec refuses but json accepted (NaN) when it was spooled
        request = json.loads(line)
    return request


def iter_result_lines(record: BatchRecord, codes: bytes, request_lines: Iterable[bytes]) -> Iterator[bytes]:
    """JSONL result lines (with newline), neighbours swapped; memory: two requests at a time."""
    waiting: bytes | None = None
    cache_seen: set[str] = set()
    cutoff = record.request_count if record.cutoff is None else record.cutoff
    for index, line in enumerate(request_lines):
        request = _decode_request(line)
        params = request["params"]
        if (
            codes[index] == _SUCCEEDED
            and index < cutoff
            and not _mentions_cache_control(line, request)
            and not any(key in params for key in _NOT_PLAIN_PARAMS)
        ):
            encoded = plain_succeeded_line(record.id, request["custom_id"], params)
        else:
            result = result_for(record, index, codes[index], request, cache_seen)
            encoded = json.dumps(result, ensure_ascii=False).encode("utf-8")
        if waiting is None:
            waiting = encoded + b"\n"
            continue
        yield encoded + b"\n"
        yield waiting
        waiting = None
    if waiting is not None:
        yield waiting
