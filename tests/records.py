"""Job records as each earlier provider version's writer stored them, made from a record of today.

``written_by(writer, stored)`` takes a record as this version stores it (version 4: every round in
``rounds``) and gives what the named writer would have stored for the same job: round 1 at the top
(``fingerprint``, ``slices``, ``ended_counts``, ``redriven``), later rounds in ``rounds``, and only the
fields that writer knew (read from ``git log -p airflow_provider_batches/job_state.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SLICE_V1 = ("count", "sha256", "intent_at", "batch_id")
_SLICE_V2 = (*_SLICE_V1, "ids_digest", "watermark", "replaced")
_SLICE_V3_QUEUE = (*_SLICE_V2, "ended_counts")
_SLICE_V3 = (*_SLICE_V3_QUEUE, "proof_id", "proof_kind", "search_until", "candidates", "disproven")
_ROUND_V3 = ("number", "fingerprint", "request_count", "not_before", "ended_counts", "redriven")
_TOP_V1 = ("finished",)
_TOP_V2 = (*_TOP_V1, "generation", "expires_at")

#: writer -> (version it stamped, its top-level fields besides round 1's, its round fields, slice fields)
WRITERS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]] = {
    # 1931eb2: the first record
    "v1": (1, _TOP_V1, None, _SLICE_V1),
    # a5da345: watermarks, custom_id digests, the clear generation, final counts
    "v2": (2, _TOP_V2, None, _SLICE_V2),
    # 8842913: re-drive rounds
    "v3-redrive": (3, (*_TOP_V2, "redrive"), _ROUND_V3, _SLICE_V2),
    # fe8051a: waves (per-slice ended counts) and the full-queue clock
    "v3-queue": (3, (*_TOP_V2, "redrive", "queue_full_since"), _ROUND_V3, _SLICE_V3_QUEUE),
    # 2c6bf04 / 35fefab: resume rounds, the job's own cancels, proof requests
    "v3": (
        3,
        (*_TOP_V2, "redrive", "queue_full_since", "own_cancels"),
        (*_ROUND_V3, "kind", "resumed_batches"),
        _SLICE_V3,
    ),
}


def written_by(writer: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` (a version 4 record) as ``writer`` kept it."""
    version, top, round_fields, slice_fields = WRITERS[writer]
    assert stored["version"] == 4, stored["version"]
    first, *later = stored["rounds"]
    if round_fields is None:
        assert not later, "versions before 3 knew no follow-up rounds"

    def slices(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{name: part[name] for name in slice_fields} for part in entry["slices"]]

    old: dict[str, Any] = {
        "version": version,
        "fingerprint": first["fingerprint"],
        "request_count": first["request_count"],
        "slices": slices(first),
        **{name: stored[name] for name in top},
    }
    if version >= 2:
        old["ended_counts"] = first["ended_counts"]
    if round_fields is not None:
        old["redriven"] = first["redriven"]
        old["rounds"] = [
            {**{name: entry[name] for name in round_fields}, "slices": slices(entry)} for entry in later
        ]
    return old
