"""Emulator settings, validated by pydantic: the CLI, the Python API and the admin endpoint share one schema.

Everything except ``host``, ``port`` and ``data_dir`` can be changed while the emulator runs
(``POST /_emulator/config``). Lifecycle durations are copied into each batch when it is created, so a
change applies to batches created afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_API_KEY = "sk-ant-emulator-key"
"""The key the emulator accepts when no ``--api-key`` is given."""

MAX_BATCH_BODY_BYTES = 256 * 1024 * 1024
MAX_MESSAGE_BODY_BYTES = 32 * 1024 * 1024
MAX_BATCH_REQUESTS = 100_000
DEFAULT_ARCHIVE_SECONDS = 29 * 24 * 3600.0

FAULT_NAMES = (
    "ok",
    "429",
    "500",
    "504",
    "529",
    "drop",
    "drop_after",
    "500_after",
    "slow",
    "cut",
    # Terminal answers (emulator/faults.py TERMINAL_FAULTS): no retry can change them.
    "spend_limit",
    "usage_limit",
    "billing",
    "permission",
    "on_hold",
)
"""What ``next_faults`` may hold: one scripted fault per /v1/ call, consumed in order. ``ok`` is
no fault (to script a later call); ``drop`` closes
the connection before the server acts; ``drop_after`` and ``500_after`` let the server act (a create
makes its batch) and then lose the answer: the connection closes, or a 500 comes back. ``spend_limit``
(429 ``rate_limit_error``, ``error.details.error_code = enforced_spend_limit_reached``, no retry-after),
``usage_limit`` (400 "You have reached your specified API usage limits"), ``billing`` (402),
``permission`` (403) and ``on_hold`` (400, ``organization_on_hold``) answer as the API does when no
retry can help."""

RESULTS_TAMPERING = ("duplicate", "reorder", "foreign_custom_id", "odd_custom_id", "truncate")
"""What ``results_tampering`` may hold (a hostile server, ``hostile.py``): ``duplicate`` repeats the
first line at the end; ``reorder`` shuffles the lines; ``foreign_custom_id`` gives the first line a
custom_id no request had; ``odd_custom_id`` gives it ``../../x``; ``truncate`` ends the stream
(cleanly) in the middle of its last line."""

STARTUP_ONLY_FIELDS = frozenset({"host", "port", "data_dir"})

TEST_MODEL = "claude-emulator-test"
"""A model id only the emulator knows, for tests that must not depend on the real catalogue."""

DEFAULT_MODELS = (
    # The ``Model`` literal of the official SDK (anthropic 2.17), newest first.
    "claude-fable-5-2",
    "claude-mythos-5-2",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-fable-5-1",
    "claude-opus-5-5",
    "claude-mythos-5-1",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-mythos-preview",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
    TEST_MODEL,
)
"""The model ids the emulator knows by default; any other answers 404 ``not_found_error``."""

RETIRED_MODELS = ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929")
"""Retired on 2026-11-30: listed by the Models API with ``lifecycle: retired``; requests naming them
fail as for an unknown model."""


class EmulatorConfig(BaseModel):
    """All emulator settings. Fractions are probabilities in [0, 1] drawn from a ``seed``-ed RNG."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Server and storage (fixed once started).
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    data_dir: Path | None = None
    public_base_url: str | None = None

    # Authentication.
    api_keys: list[str] = Field(default_factory=lambda: [DEFAULT_API_KEY], min_length=1)

    # Lifecycle clock (seconds). 0 = instant: the transition shows on the next read.
    processing_seconds: float = Field(default=3.0, ge=0)
    canceling_seconds: float = Field(default=1.0, ge=0)
    expiry_seconds: float = Field(default=86_400.0, gt=0)
    archive_seconds: float = Field(default=DEFAULT_ARCHIVE_SECONDS, gt=0)

    # Limits.
    max_batch_body_bytes: int = Field(default=MAX_BATCH_BODY_BYTES, ge=1)
    max_message_body_bytes: int = Field(default=MAX_MESSAGE_BODY_BYTES, ge=1)
    max_batch_requests: int = Field(default=MAX_BATCH_REQUESTS, ge=1)
    max_queued_requests: int | None = Field(
        default=None, ge=1, description="requests per key in batches still processing; None = unlimited"
    )

    # Open points of the API, answered by configuration.
    results_before_end_status: int = Field(default=400, description="400 or 404")
    results_after_archive_status: int = Field(default=404, description="404 or 400")

    # Models: the catalogue of known ids (extend it with your own: models=[*DEFAULT_MODELS, "x"]).
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS), min_length=1)
    retired_models: list[str] = Field(default_factory=lambda: list(RETIRED_MODELS))

    # Synthetic outcomes.
    errored_fraction: float = Field(default=0.0, ge=0, le=1)
    errored_type: str = "api_error"

    # Faults (only on /v1/ routes).
    seed: int = 0
    requests_per_minute: int = Field(default=0, ge=0, description="per API key; 0 = unlimited")
    count_tokens_requests_per_minute: int = Field(default=0, ge=0)
    overloaded_fraction: float = Field(default=0.0, ge=0, le=1)
    api_error_fraction: float = Field(default=0.0, ge=0, le=1)
    timeout_fraction: float = Field(default=0.0, ge=0, le=1)
    drop_fraction: float = Field(default=0.0, ge=0, le=1)
    drop_after_fraction: float = Field(
        default=0.0, ge=0, le=1, description="calls the server performs, then drops the connection"
    )
    slow_seconds: float = Field(default=0.0, ge=0)
    slow_fraction: float = Field(default=1.0, ge=0, le=1)
    retry_after_ms: int | None = Field(default=None, ge=0)
    cut_results_after_bytes: int | None = Field(default=None, ge=0)
    cut_results_fraction: float = Field(default=1.0, ge=0, le=1)
    next_faults: list[str] = Field(default_factory=list)
    #: Whether the Models API (GET /v1/models...) gets injected faults too. Off by default: a job looks
    #: its models up before its paid calls, and scripted faults are meant for those calls.
    faults_on_models_api: bool = False

    # A hostile server (see ``hostile.py``): answers a broken or malicious gateway could give.
    answer_batch_id: str | None = Field(
        default=None, description="every batch object answered carries this id instead of its own"
    )
    results_tampering: list[str] = Field(default_factory=list)
    giant_result_bytes: int | None = Field(
        default=None, ge=0, description="the first result line of every download padded to this size"
    )
    # Faults of creates only (POST /v1/messages/batches), for concurrent jobs whose other calls
    # must not take them: scripted ones first, then the fractions (on the same draw as the rest).
    create_faults: list[str] = Field(default_factory=list)
    create_drop_fraction: float = Field(
        default=0.0, ge=0, le=1, description="creates whose connection closes before the server acts"
    )
    create_drop_after_fraction: float = Field(
        default=0.0, ge=0, le=1, description="creates the server performs, then drops the connection"
    )

    @field_validator("next_faults", "create_faults")
    @classmethod
    def _known_faults(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in FAULT_NAMES]
        if unknown:
            raise ValueError(f"unknown fault names {unknown}; expected some of {list(FAULT_NAMES)}")
        return value

    @field_validator("results_tampering")
    @classmethod
    def _known_tampering(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in RESULTS_TAMPERING]
        if unknown:
            raise ValueError(
                f"unknown results_tampering {unknown}; expected some of {list(RESULTS_TAMPERING)}"
            )
        return value

    @field_validator("results_before_end_status", "results_after_archive_status")
    @classmethod
    def _client_error_status(cls, value: int) -> int:
        if value not in (400, 404):
            raise ValueError("must be 400 or 404")
        return value

    def patched(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Return a validated copy with ``changes`` applied; refuses the fields fixed at start."""
        fixed = sorted(STARTUP_ONLY_FIELDS & changes.keys())
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: cannot be changed while the emulator runs")
        return EmulatorConfig.model_validate({**self.model_dump(), **changes})

    def runtime_view(self) -> dict[str, Any]:
        """The config as JSON-ready data, API keys masked so the admin endpoint never shows secrets."""
        data = self.model_dump(mode="json")
        data["api_keys"] = [mask_key(key) for key in self.api_keys]
        return data


def mask_key(api_key: str) -> str:
    """A label for a key that is safe to log or show (stats, admin)."""
    if len(api_key) <= 12:
        return api_key[:3] + "..."
    return f"{api_key[:7]}...{api_key[-4:]}"
