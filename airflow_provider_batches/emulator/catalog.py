"""The Models API as the emulator serves it: ``GET /v1/models`` and ``GET /v1/models/{id}``.

Each answer has the shape of the official SDK's ``ModelInfo`` (anthropic 2.17): id, type,
display_name, created_at, lifecycle (active, deprecated, retired), deprecated_at, retires_at, line,
max_input_tokens, max_tokens and the full ``capabilities`` tree. A retired model stays in the
catalogue with ``lifecycle: retired`` (as the API keeps it, "the historical record of its
retirement"), while requests naming it fail like those naming an unknown model.

The figures follow the official model pages (platform.claude.com/docs/en/models/*, checked
2026-12-04) where they give them; release dates the stored copies do not give are approximate. A
model the config knows that is not listed here (an id added for a test) gets generous defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_batches.emulator.apierrors import not_found
from airflow_provider_batches.emulator.config import EmulatorConfig

__all__ = ["ModelFacts", "model_info", "model_page"]


@dataclass(frozen=True)
class ModelFacts:
    display_name: str
    released: str  # RFC 3339 date
    max_input_tokens: int
    max_tokens: int
    line: str | None
    thinking_enabled: bool = False  # manual extended thinking (type "enabled") accepted
    deprecated_at: str | None = None
    retires_at: str | None = None


_NEW = 1_000_000, 128_000
_OLD = 200_000, 64_000

FACTS: dict[str, ModelFacts] = {
    "claude-fable-5-2": ModelFacts("Claude Fable 5.2", "2026-11-09", *_NEW, "fable"),
    "claude-mythos-5-2": ModelFacts("Claude Mythos 5.2", "2026-11-09", *_NEW, "mythos"),
    "claude-haiku-5-5": ModelFacts("Claude Haiku 5.5", "2026-10-07", *_NEW, "haiku"),
    "claude-sonnet-5-5": ModelFacts("Claude Sonnet 5.5", "2026-09-22", *_NEW, "sonnet"),
    "claude-fable-5-1": ModelFacts("Claude Fable 5.1", "2026-09-01", *_NEW, "fable"),
    "claude-opus-5-5": ModelFacts("Claude Opus 5.5", "2026-09-22", *_NEW, "opus"),
    "claude-mythos-5-1": ModelFacts("Claude Mythos 5.1", "2026-09-01", *_NEW, "mythos"),
    "claude-sonnet-5": ModelFacts("Claude Sonnet 5", "2026-06-30", *_NEW, "sonnet"),
    "claude-fable-5": ModelFacts("Claude Fable 5", "2026-06-09", *_NEW, "fable"),
    "claude-mythos-5": ModelFacts("Claude Mythos 5", "2026-06-09", *_NEW, "mythos"),
    "claude-opus-5": ModelFacts("Claude Opus 5", "2026-07-24", *_NEW, "opus"),
    "claude-opus-4-8": ModelFacts("Claude Opus 4.8", "2026-05-01", *_NEW, "opus"),
    "claude-opus-4-7": ModelFacts("Claude Opus 4.7", "2026-04-01", *_NEW, "opus"),
    "claude-mythos-preview": ModelFacts("Claude Mythos Preview", "2026-04-07", *_NEW, "mythos"),
    "claude-opus-4-6": ModelFacts("Claude Opus 4.6", "2026-02-05", *_NEW, "opus", thinking_enabled=True),
    "claude-sonnet-4-6": ModelFacts(
        "Claude Sonnet 4.6", "2026-02-17", *_NEW, "sonnet", thinking_enabled=True
    ),
    "claude-haiku-4-5": ModelFacts("Claude Haiku 4.5", "2025-10-01", *_OLD, "haiku", thinking_enabled=True),
    "claude-haiku-4-5-20251001": ModelFacts(
        "Claude Haiku 4.5", "2025-10-01", *_OLD, "haiku", thinking_enabled=True
    ),
    "claude-opus-4-5": ModelFacts("Claude Opus 4.5", "2025-11-24", *_OLD, "opus", thinking_enabled=True),
    "claude-opus-4-5-20251101": ModelFacts(
        "Claude Opus 4.5", "2025-11-24", *_OLD, "opus", thinking_enabled=True
    ),
    # Retired on 2026-11-30 (platform.claude.com/docs/en/models/sonnet-4-5/overview).
    "claude-sonnet-4-5": ModelFacts(
        "Claude Sonnet 4.5", "2025-09-29", *_OLD, "sonnet", True, "2026-06-30", "2026-11-30"
    ),
    "claude-sonnet-4-5-20250929": ModelFacts(
        "Claude Sonnet 4.5", "2025-09-29", *_OLD, "sonnet", True, "2026-06-30", "2026-11-30"
    ),
}
_DEFAULT = ModelFacts("", "1970-01-01", 1_000_000, 128_000, None, thinking_enabled=True)


def _supported(value: bool) -> dict[str, bool]:
    return {"supported": value}


def _capabilities(facts: ModelFacts) -> dict[str, Any]:
    """The whole ``ModelCapabilities`` tree: every key present, as the API sends it."""
    return {
        "batch": _supported(True),
        "citations": _supported(True),
        "code_execution": _supported(True),
        "context_management": {
            "supported": True,
            "clear_thinking_20251015": _supported(True),
            "clear_tool_uses_20250919": _supported(True),
            "compact_20260112": _supported(True),
        },
        "effort": {
            "supported": True,
            **{level: _supported(True) for level in ("low", "medium", "high", "max", "xhigh")},
        },
        "image_input": _supported(True),
        "pdf_input": _supported(True),
        "structured_outputs": _supported(True),
        "thinking": {
            "supported": True,
            "types": {
                "adaptive": _supported(True),
                "between_tools": _supported(True),
                "disabled": _supported(True),
                "enabled": _supported(facts.thinking_enabled),
            },
        },
    }


def _lifecycle(model: str, config: EmulatorConfig) -> str:
    if model in config.retired_models:
        return "retired"
    facts = FACTS.get(model, _DEFAULT)
    return "deprecated" if facts.deprecated_at else "active"


def _catalogue(config: EmulatorConfig) -> list[str]:
    """Every model the Models API lists: the known ones, then the retired ones."""
    return list(dict.fromkeys([*config.models, *config.retired_models]))


def model_info(model: str, config: EmulatorConfig) -> dict[str, Any]:
    """One ``ModelInfo``; a model neither known nor retired answers 404 ``not_found_error``."""
    if model not in config.models and model not in config.retired_models:
        raise not_found(f"model: {model}")
    facts = FACTS.get(model, _DEFAULT)
    lifecycle = _lifecycle(model, config)
    deprecated_at = facts.deprecated_at or (facts.retires_at if lifecycle == "retired" else None)
    return {
        "type": "model",
        "id": model,
        "display_name": facts.display_name or model,
        "created_at": f"{facts.released}T00:00:00Z",
        "lifecycle": lifecycle,
        "deprecated_at": f"{deprecated_at}T00:00:00Z" if deprecated_at else None,
        "retires_at": f"{facts.retires_at}T00:00:00Z" if facts.retires_at and lifecycle != "active" else None,
        "line": facts.line,
        "max_input_tokens": facts.max_input_tokens,
        "max_tokens": facts.max_tokens,
        "capabilities": _capabilities(facts),
    }


def model_page(
    config: EmulatorConfig, *, limit: int, after_id: str | None, before_id: str | None
) -> dict[str, Any]:
    """One page of ``GET /v1/models`` (the catalogue's order), with the API's cursor fields."""
    ids = _catalogue(config)
    start, end = 0, len(ids)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(start, end - limit)
    chosen = ids[start : min(end, start + limit)]
    data = [model_info(model, config) for model in chosen]
    return {
        "data": data,
        "first_id": chosen[0] if chosen else None,
        "last_id": chosen[-1] if chosen else None,
        "has_more": start + len(chosen) < end,
    }
