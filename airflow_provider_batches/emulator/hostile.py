"""A hostile server: answers a broken or malicious gateway could give, so that the client's distrust
of them is tested over real sockets.

Off unless configured. ``answer_batch_id`` puts another id into every batch object answered (another
batch's, or an odd one such as ``../../x``); ``results_tampering`` rewrites results downloads
(lines repeated, reordered, carrying a foreign or odd custom_id, a stream that ends mid-line);
``giant_result_bytes`` pads the first result's answer to that many bytes, streamed without holding
it. It wraps the routes inside the gate, so authentication and faults apply first.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_batches.emulator.state import EmulatorState

FOREIGN_CUSTOM_ID = "not-submitted-by-this-job"
ODD_ID = "../../x"
_GIANT_CHUNK = b"a" * (1 << 20)
_PLACEHOLDER = "\u0000giant\u0000"


class HostileAnswers:
    """ASGI wrapper that rewrites /v1/ batch answers as the config's hostile settings say."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.state.config
        path = str(scope.get("path", ""))
        is_batches = scope.get("type") == "http" and path.startswith("/v1/messages/batches")
        is_results = is_batches and path.endswith("/results")
        hostile = config.giant_result_bytes is not None or bool(config.results_tampering)
        if (
            not is_batches
            or (is_results and not hostile)
            or (not is_results and config.answer_batch_id is None)
        ):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        if start is None:
            return
        ok = 200 <= int(start["status"]) < 300
        if is_results and ok:
            chunks: Iterator[bytes] = self._results(bytes(body))
        elif ok:
            chunks = iter([self._batch_answer(bytes(body))])
        else:
            chunks = iter([bytes(body)])
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def _batch_answer(self, body: bytes) -> bytes:
        """The batch object(s) with ``answer_batch_id`` in place of their own id."""
        forged = self.state.config.answer_batch_id
        try:
            data: Any = json.loads(body)
        except ValueError:
            return body
        if isinstance(data, dict) and isinstance(data.get("data"), list):  # a listing page
            for item in data["data"]:
                item["id"] = forged
            if data["data"]:
                data["first_id"] = data["last_id"] = forged
        elif isinstance(data, dict) and "id" in data:
            data["id"] = forged
        return json.dumps(data).encode()

    def _results(self, body: bytes) -> Iterator[bytes]:
        config = self.state.config
        lines = [line for line in body.split(b"\n") if line.strip()]
        tampering = config.results_tampering
        if lines and "foreign_custom_id" in tampering:
            lines[0] = _with_custom_id(lines[0], FOREIGN_CUSTOM_ID)
        if lines and "odd_custom_id" in tampering:
            lines[0] = _with_custom_id(lines[0], ODD_ID)
        if lines and "duplicate" in tampering:
            lines.append(lines[0])
        if "reorder" in tampering:
            random.Random(config.seed).shuffle(lines)
        if lines and config.giant_result_bytes is not None:
            first = lines.pop(next((i for i, line in enumerate(lines) if b'"succeeded"' in line), 0))
            yield from _giant(first, config.giant_result_bytes, cut="truncate" in tampering and not lines)
        text = b"".join(line + b"\n" for line in lines)
        if "truncate" in tampering and lines:
            text = text[: len(text) - len(lines[-1]) // 2 - 1]
        yield text


def _with_custom_id(line: bytes, custom_id: str) -> bytes:
    data = json.loads(line)
    data["custom_id"] = custom_id
    return json.dumps(data).encode()


def _giant(line: bytes, size: int, *, cut: bool = False) -> Iterator[bytes]:
    """``line`` with its answer's text (or, for another type, an extra field) padded so that the line
    has about ``size`` bytes, in 1 MiB
    chunks (never held whole); ``cut``: the stream ends inside the text (a truncated last line)."""
    data = json.loads(line)
    message = data.get("result", {}).get("message")
    if isinstance(message, dict):
        message["content"] = [{"type": "text", "text": _PLACEHOLDER}]
    else:  # not a succeeded line: the padding goes into an extra field, the type stays
        data["result"]["emulator_padding"] = _PLACEHOLDER
    head, tail = json.dumps(data).encode().split(json.dumps(_PLACEHOLDER).encode()[1:-1])
    yield head
    left = max(size - len(head) - len(tail) - 1, 0)
    while left > 0:
        piece = _GIANT_CHUNK[: min(left, len(_GIANT_CHUNK))]
        left -= len(piece)
        yield piece
    if not cut:
        yield tail + b"\n"
