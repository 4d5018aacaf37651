"""Result lines of an ended batch, produced one at a time from the request spool.

Lines are written with each pair of neighbours swapped (request 1, 0, 3, 2, ...): the API promises no
order, and a client that assumes submission order should fail against the emulator too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_provider_batches.emulator import lifecycle
from airflow_provider_batches.emulator.answers import (
    build_message,
    message_id_for,
    plan_outcome,
    request_id_for,
)
from airflow_provider_batches.emulator.lifecycle import BatchRecord


def result_for(record: BatchRecord, index: int, planned_code: int, request: dict[str, Any]) -> dict[str, Any]:
    """``{"custom_id": ..., "result": {...}}`` for one request of an ended batch."""
    custom_id: str = request["custom_id"]
    params: dict[str, Any] = request["params"]
    kind = lifecycle.final_outcome(planned_code, index, record)
    if kind == "succeeded":
        message = build_message(params, message_id=message_id_for(record.id, custom_id), service_tier="batch")
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


def iter_result_lines(record: BatchRecord, codes: bytes, request_lines: Iterable[str]) -> Iterator[str]:
    """JSONL result lines (with newline), neighbours swapped; memory: two requests at a time."""
    waiting: str | None = None
    for index, line in enumerate(request_lines):
        encoded = json.dumps(result_for(record, index, codes[index], json.loads(line)), ensure_ascii=False)
        if waiting is None:
            waiting = encoded + "\n"
            continue
        yield encoded + "\n"
        yield waiting
        waiting = None
    if waiting is not None:
        yield waiting
