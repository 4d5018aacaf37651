"""Prompt lists: plain prompts (or small dicts) turned into batch requests with stable custom_ids.

A prompt is a string (one user turn) or a dict with ``prompt`` (one user turn) or ``messages`` (a
whole conversation), plus optional ``custom_id`` and any Messages parameter (``system``,
``max_tokens``, ``model``, ``temperature``...), which overrides the shared one for that prompt. A
full request (a dict with ``custom_id`` and ``params``) may stand among prompts; it is kept as it is.

custom_ids are ``prompt-<index>`` (0-based position in the list) unless a prompt names its own. The
same prompts in the same order give the same requests on every try, so the job's fingerprint, and
with it re-attaching on retry, work exactly as for hand-written requests. Everything else (model
filled in, max_tokens, duplicate ids...) is checked by :mod:`airflow_provider_batches.requests`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow_provider_batches.errors import RequestValidationError

#: The custom_id of the prompt at ``index`` when it names none.
CUSTOM_ID_FORMAT = "prompt-{index}"
#: Keys of a dict prompt that are not Messages parameters.
ENVELOPE_KEYS = frozenset({"custom_id", "prompt"})


def prompt_custom_id(index: int) -> str:
    return CUSTOM_ID_FORMAT.format(index=index)


def build_prompt_requests(
    prompts: Sequence[str | Mapping[str, Any]],
    *,
    max_tokens: int | None = None,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One ``{"custom_id", "params"}`` request per prompt; shared settings under each prompt's own."""
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Sequence):
        raise RequestValidationError(
            f"prompts must be a list of strings or dicts, got {type(prompts).__name__}: "
            "wrap a single prompt in a list"
        )
    return list(iter_prompt_requests(prompts, max_tokens=max_tokens, system=system, params=params))


def iter_prompt_requests(
    items: Iterable[Any],
    *,
    max_tokens: int | None = None,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Requests from prompts, streamed; an item that is already a request (it has ``params``) is kept."""
    shared: dict[str, Any] = dict(params or {})
    if max_tokens is not None:
        shared["max_tokens"] = max_tokens
    if system is not None:
        shared["system"] = system
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and "params" in item:
            yield dict(item)
        else:
            yield _request(index, item, shared)


def _request(index: int, prompt: Any, shared: Mapping[str, Any]) -> dict[str, Any]:
    where = f"prompts[{index}]"
    if isinstance(prompt, str):
        prompt = {"prompt": prompt}
    if not isinstance(prompt, Mapping):
        raise RequestValidationError(
            f"{where}: a prompt is a string or a dict with 'prompt' or 'messages', "
            f"got {type(prompt).__name__}"
        )
    custom_id = prompt.get("custom_id", prompt_custom_id(index))
    has_text, has_messages = "prompt" in prompt, "messages" in prompt
    if has_text == has_messages:
        raise RequestValidationError(
            f"{where} (custom_id {custom_id!r}): give exactly one of 'prompt' (the user's text) "
            "or 'messages' (a whole conversation)"
        )
    params = {**shared, **{key: value for key, value in prompt.items() if key not in ENVELOPE_KEYS}}
    if has_text:
        text = prompt["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise RequestValidationError(
                f"{where} (custom_id {custom_id!r}): prompt must be non-empty text, got {text!r}"
            )
        params["messages"] = [{"role": "user", "content": text}]
    return {"custom_id": custom_id, "params": params}
