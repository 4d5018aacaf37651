"""The re-drive policy: which failed requests of a round are submitted again as the next round.

``Redrive`` is the create operator's opt-in setting; :func:`select_retryable` streams one batch's
results and keeps only the custom_ids to re-drive (and counts per reason), never the results.
Transient failures are re-driven (by default ``overloaded_error``, ``api_error``,
``rate_limit_error``, ``timeout_error``, and ``expired``); a permanent error such as
``invalid_request_error`` never is, since sending the same request again cannot help.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_batches.proof import is_proof_id
from airflow_provider_batches.result_lines import iter_result_lines

#: Error types that say nothing about the request itself: worth sending again.
TRANSIENT_ERROR_TYPES: tuple[str, ...] = (
    "overloaded_error",
    "api_error",
    "rate_limit_error",
    "timeout_error",
)
#: Error types that sending the same request again cannot fix: never re-driven, whatever is asked.
PERMANENT_ERROR_TYPES: frozenset[str] = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
    }
)
MAX_ROUNDS_LIMIT = 10


@dataclass(frozen=True)
class Redrive:
    """Re-drive a job's failed requests as follow-up batches (rounds), at most ``max_rounds`` in all.

    :param max_rounds: rounds including the first submission (2 = at most one follow-up).
    :param error_types: ``errored`` results with these error types are sent again.
    :param include_expired: send ``expired`` requests again.
    :param include_canceled: send ``canceled`` requests again (off: a cancel is usually meant).
    :param delay: seconds to wait after a round ends before the next is submitted.
    """

    max_rounds: int = 3
    error_types: tuple[str, ...] = TRANSIENT_ERROR_TYPES
    include_expired: bool = True
    include_canceled: bool = False
    delay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "error_types", tuple(self.error_types))
        if not 2 <= self.max_rounds <= MAX_ROUNDS_LIMIT:
            raise ValueError(
                f"Redrive(max_rounds={self.max_rounds!r}): give 2 to {MAX_ROUNDS_LIMIT} (the first round "
                "included; 2 = one follow-up)"
            )
        permanent = sorted(set(self.error_types) & PERMANENT_ERROR_TYPES)
        if permanent:
            raise ValueError(
                f"Redrive(error_types=...) names permanent error(s) {', '.join(permanent)}: sending the same "
                "request again cannot fix them; remove them"
            )
        if self.delay < 0:
            raise ValueError(f"Redrive(delay={self.delay!r}) must not be negative")

    def reason(self, kind: str, error_type: str | None) -> str | None:
        """Why a result is re-driven (``errored:<type>``, ``expired``, ``canceled``), or None."""
        if kind == "errored" and error_type in self.error_types:
            return f"errored:{error_type}"
        if (kind == "expired" and self.include_expired) or (kind == "canceled" and self.include_canceled):
            return kind
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "max_rounds": self.max_rounds,
            "error_types": list(self.error_types),
            "include_expired": self.include_expired,
            "include_canceled": self.include_canceled,
            "delay": self.delay,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Redrive:
        return cls(
            max_rounds=int(data["max_rounds"]),
            error_types=tuple(data["error_types"]),
            include_expired=bool(data["include_expired"]),
            include_canceled=bool(data["include_canceled"]),
            delay=float(data["delay"]),
        )


class ResultPolicy(Protocol):
    """Why a result is sent again in the next round (``Redrive``, or a canceled batch's resume)."""

    def reason(self, kind: str, error_type: str | None) -> str | None: ...


@dataclass
class Selection:
    """The custom_ids to re-drive (at most the round's failures) and how many per reason."""

    custom_ids: set[str] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)

    def redriven_counts(self) -> dict[str, int]:
        """Per result type (``errored``, ``expired``, ``canceled``), how many results go to the next round."""
        counts: Counter[str] = Counter()
        for reason, count in self.reasons.items():
            counts[reason.split(":", 1)[0]] += count
        return dict(counts)


def select_retryable(policy: ResultPolicy, chunks: Iterable[bytes], selection: Selection) -> None:
    """Add the re-drivable custom_ids of one batch's JSONL results (any chunking) to ``selection``;
    ValueError naming the first line that is not a result."""
    for line in iter_result_lines(chunks):
        kind = line.result.type
        if kind == "succeeded" or is_proof_id(line.custom_id):  # the proof is not re-driven
            continue
        error = line.result.error
        error_type = error.error.type if error is not None and error.error is not None else None
        reason = policy.reason(kind, error_type)
        if reason is not None:
            selection.custom_ids.add(line.custom_id)
            selection.reasons[reason] += 1
