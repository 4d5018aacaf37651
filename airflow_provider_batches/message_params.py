"""A typed model of the Messages API request (``params`` of a batch request), checked locally.

The field list follows the official SDK's ``MessageCreateParams`` (anthropic 2.12) plus the sampling
fields the API still documents (``temperature``, ``top_p``, ``top_k``) and the beta fields a batch
may carry (their inner shape is not checked). Content blocks and tools are kept permissive: a block
needs a ``type`` string, a tool a ``name``; anything else in them passes, so that valid requests
using newer block or tool types are never refused.

Checking is two-step so that a 100,000-line file stays fast: :func:`params_problems` first lets
msgspec convert the params in C (the happy path); only when that fails does a walk over the same
types list every problem of the request, each with its dotted path and a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec import inspect as mi

MAX_TOKENS_CEILING = 1_000_000
"""Upper bound of ``max_tokens``: the largest context window of any model (1M tokens); no model can
output more, and absurd values (10**20) never reach the API. A model's own, lower output limit is
checked by the API, per request."""

MIN_THINKING_BUDGET = 1024
"""``thinking.budget_tokens`` must be at least 1,024 (SDK documentation)."""

Unit = Annotated[float, Meta(ge=0, le=1)]


class _Closed(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """An object whose keys are all known: an unknown key is refused with a did-you-mean."""


class _Open(Struct, omit_defaults=True, gc=False):
    """An object whose other keys pass unchecked (content blocks, tools: the API grows them)."""


class CacheControl(_Closed):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | UnsetType = UNSET


class ContentBlock(_Open):
    type: str
    cache_control: CacheControl | UnsetType | None = UNSET


class TextBlock(_Open):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | UnsetType | None = UNSET


class Message(_Closed):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Open):
    name: Annotated[str, Meta(min_length=1)]
    cache_control: CacheControl | UnsetType | None = UNSET


class Metadata(_Closed):
    user_id: str | UnsetType | None = UNSET


class Diagnostics(_Closed):
    previous_message_id: str | UnsetType | None = UNSET


class JsonOutputFormat(_Closed):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(_Closed):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | UnsetType | None = UNSET
    format: JsonOutputFormat | UnsetType | None = UNSET


class ThinkingEnabled(_Closed, tag_field="type", tag="enabled"):
    budget_tokens: Annotated[int, Meta(ge=MIN_THINKING_BUDGET)]
    display: Literal["summarized", "omitted"] | UnsetType | None = UNSET


class ThinkingAdaptive(_Closed, tag_field="type", tag="adaptive"):
    display: Literal["summarized", "omitted"] | UnsetType | None = UNSET


class ThinkingDisabled(_Closed, tag_field="type", tag="disabled"):
    pass


class ThinkingBetweenTools(_Closed, tag_field="type", tag="between_tools"):
    pass


class ToolChoiceAuto(_Closed, tag_field="type", tag="auto"):
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ToolChoiceAny(_Closed, tag_field="type", tag="any"):
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ToolChoiceTool(_Closed, tag_field="type", tag="tool"):
    name: str
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ToolChoiceNone(_Closed, tag_field="type", tag="none"):
    pass


class MessageParams(_Closed):
    """``params`` of one batch request: every documented field, its type and range."""

    model: Annotated[str, Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS_CEILING)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    cache_control: CacheControl | UnsetType | None = UNSET
    container: str | dict[str, Any] | UnsetType | None = UNSET
    diagnostics: Diagnostics | UnsetType | None = UNSET
    inference_geo: str | UnsetType | None = UNSET
    metadata: Metadata | UnsetType = UNSET
    output_config: OutputConfig | UnsetType = UNSET
    service_tier: Literal["auto", "standard_only"] | UnsetType = UNSET
    speed: Literal["standard", "fast"] | UnsetType | None = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: Literal[False] | UnsetType = UNSET
    system: str | list[TextBlock] | UnsetType = UNSET
    temperature: Unit | UnsetType = UNSET
    top_p: Unit | UnsetType = UNSET
    top_k: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    thinking: ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled | ThinkingBetweenTools | UnsetType = UNSET
    tool_choice: ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    user_profile_id: str | UnsetType = UNSET
    workspace_id: str | UnsetType = UNSET
    # Beta fields (sent with an anthropic-beta header): accepted, their shape left to the API.
    billing_policy: Any = UNSET
    compaction: Any = UNSET
    context_management: Any = UNSET
    fallback_credit_token: Any = UNSET
    fallbacks: Any = UNSET
    mcp_servers: Any = UNSET
    output_format: Any = UNSET
    thread: Any = UNSET


FIXES: dict[str, str] = {
    "model": "set it in the request or pass model= to the operator",
    "max_tokens": "set the most output tokens the answer may use",
    "stream": "a batch cannot stream; remove it",
}
"""A fix for the fields whose problem needs more than 'must be ...' to be clear (top level only)."""

_convert = msgspec.convert


def params_problems(params: Mapping[str, Any], prefix: str = "params") -> list[str]:
    """Every problem of ``params`` as ``"<prefix>.<dotted.path> ...: fix"``; empty when valid."""
    try:
        _convert(params, MessageParams, strict=True)
    except msgspec.ValidationError as exc:
        found = list(_problems(params, _PARAMS_TYPE, prefix))
        return found or [f"{prefix} is invalid: {exc}"]
    return []


_PARAMS_TYPE = mi.type_info(MessageParams)


def _problems(value: Any, info: mi.Type, path: str) -> Iterator[str]:
    """The problems of ``value`` against ``info``, all of them, in field order."""
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.AnyType):
        return
    if isinstance(info, mi.UnionType):
        yield from _union_problems(value, info, path)
        return
    if isinstance(info, mi.StructType):
        yield from _struct_problems(value, info, path)
        return
    if isinstance(info, mi.ListType):
        if not isinstance(value, list):
            yield _must(path, info, value)
            return
        if info.min_length and len(value) < info.min_length:
            yield f"{path} must be {_describe(info)}, got an empty list"
        for index, item in enumerate(value):
            yield from _problems(item, info.item_type, f"{path}.{index}")
        return
    if not _matches(value, info):
        yield _must(path, info, value)


def _struct_problems(value: Any, info: mi.StructType, path: str) -> Iterator[str]:
    if not isinstance(value, Mapping):
        yield _must(path, info, value)
        return
    known = {field.encode_name: field for field in info.fields}
    for key in value:
        if key in known or key == info.tag_field:
            continue
        if info.forbid_unknown_fields:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else f"remove it (known: {', '.join(known)})"
            yield f"{path}.{key} is not a known field: {fix}"
    for name, field in known.items():
        field_path = f"{path}.{name}"
        hint = FIXES.get(name) if path == "params" else None
        if name not in value:
            if field.required:
                yield f"{field_path} is missing: " + (hint or f"it must be {_describe(field.type)}")
            continue
        for problem in _problems(value[name], field.type, field_path):
            yield f"{problem} ({hint})" if hint else problem


def _union_problems(value: Any, info: mi.UnionType, path: str) -> Iterator[str]:
    options = list(info.types)
    structs = [t for t in options if isinstance(t, mi.StructType)]
    if isinstance(value, Mapping) and structs:
        if structs[0].tag_field is not None:
            tag_field = structs[0].tag_field
            chosen = next((s for s in structs if value.get(tag_field) == s.tag), None)
            if chosen is None:
                tags = ", ".join(repr(s.tag) for s in structs)
                yield f"{path}.{tag_field} must be one of {tags}, got {value.get(tag_field)!r}"
                return
            yield from _struct_problems(value, chosen, path)
            return
        yield from _struct_problems(value, structs[0], path)
        return
    for option in options:
        if isinstance(option, mi.ListType) and isinstance(value, list):
            yield from _problems(value, option, path)
            return
        if not isinstance(option, (mi.StructType, mi.ListType)) and _matches(value, option):
            return
    yield _must(path, info, value)


def _matches(value: Any, info: mi.Type) -> bool:
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.NoneType):
        return value is None
    if isinstance(info, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(info, mi.StrType):
        return isinstance(value, str) and len(value) >= (info.min_length or 0)
    if isinstance(info, mi.LiteralType):
        return any(value == option and type(value) is type(option) for option in info.values)
    if isinstance(info, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool) and _in_range(value, info)
    if isinstance(info, mi.FloatType):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and _in_range(value, info)
    if isinstance(info, mi.DictType):
        return isinstance(value, Mapping)
    return isinstance(info, mi.AnyType)


def _in_range(value: float, info: mi.IntType | mi.FloatType) -> bool:
    return (info.ge is None or value >= info.ge) and (info.le is None or value <= info.le)


def _must(path: str, info: mi.Type, value: Any) -> str:
    return f"{path} must be {_describe(info)}, got {_shown(value)}"


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, (Mapping, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(info: mi.Type) -> str:
    """How a type reads in a message: 'an integer from 1 to 1,000,000', "one of 'auto', 'any'"."""
    if isinstance(info, mi.Metadata):
        return _describe(info.type)
    if isinstance(info, mi.UnionType):
        parts = [_describe(t) for t in info.types]
        return " or ".join(dict.fromkeys(parts))
    if isinstance(info, mi.IntType | mi.FloatType):
        noun = "an integer" if isinstance(info, mi.IntType) else "a number"
        if info.ge is not None and info.le is not None:
            return f"{noun} from {info.ge:,} to {info.le:,}"
        if info.ge is not None:
            return f"{noun} >= {info.ge:,}"
        return noun
    if isinstance(info, mi.LiteralType):
        shown = [("true" if v else "false") if isinstance(v, bool) else repr(v) for v in info.values]
        return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)
    if isinstance(info, mi.ListType):
        size = "a non-empty list" if info.min_length else "a list"
        item = _describe(info.item_type)
        if isinstance(info.item_type, mi.AnyType):
            return size
        plural = item.replace("an object", "objects").replace("a string", "strings")
        return f"{size} of {plural}"
    if isinstance(info, mi.StructType):
        if info.tag is not None:
            return f"an object with type {info.tag!r}"
        required = [f.encode_name for f in info.fields if f.required]
        return "an object" + (f" with {', '.join(map(repr, required))}" if required else "")
    names = {
        mi.StrType: "a string",
        mi.BoolType: "true or false",
        mi.NoneType: "null",
        mi.DictType: "an object",
    }
    return names.get(type(info), "valid JSON")
