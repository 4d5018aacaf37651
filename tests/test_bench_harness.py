"""The benchmark harness: which scenarios a run picks, and the create floor's slicing at the API's limits."""

from __future__ import annotations

import io
import json

import pytest

from bench import variants
from bench.__main__ import failed_table, selected_scenarios
from bench.scenarios import SCENARIOS


def test_only_picks_scenarios_by_name_in_their_order() -> None:
    assert selected_scenarios("create,export", None) == [1, 2, 6]


def test_only_takes_numbers_too_and_adds_scenario_flags() -> None:
    assert selected_scenarios("5", [3]) == [3, 5]


def test_no_selection_runs_every_scenario() -> None:
    assert selected_scenarios(None, None) == sorted(SCENARIOS)


def test_an_unknown_scenario_name_stops_the_run_naming_the_known_ones() -> None:
    with pytest.raises(SystemExit, match="unknown scenario 'exports'.*export, create"):
        selected_scenarios("exports", None)


def test_a_failed_scenario_leaves_a_missed_target() -> None:
    table = failed_table(1, RuntimeError("the emulator did not start"))
    assert [(ok, measured) for _, measured, ok in table.targets] == [(False, "failed")]
    assert "the emulator did not start" in table.markdown()


def test_a_failed_variant_is_reported_by_its_first_and_last_error_lines() -> None:
    error = RuntimeError(
        "variant x failed (exit 1):\nTraceback\n  File ...\nModuleNotFoundError: No module named 'y'"
    )
    assert failed_table(2, error).rows == [
        ["RuntimeError: variant x failed (exit 1): ... ModuleNotFoundError: No module named 'y'"]
    ]


def bodies_of(lines: list[bytes]) -> list[list[str]]:
    return [
        [item["custom_id"] for item in json.loads(b"".join(body))["requests"]]
        for body in variants._sliced_bodies(io.BytesIO(b"".join(lines)))
    ]


def line(custom_id: str, padding: int = 0) -> bytes:
    return json.dumps({"custom_id": custom_id, "params": {"pad": "x" * padding}}).encode() + b"\n"


def test_the_validate_floor_slices_at_the_request_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(variants, "BATCH_MAX_REQUESTS", 3)
    assert bodies_of([line(f"r{i}") for i in range(7)]) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]


def test_the_validate_floor_slices_at_the_body_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    one = len(line("r0", 100)) - 1
    monkeypatch.setattr(variants, "BATCH_MAX_BYTES", len(b'{"requests":[]}') + 2 * one + 1)  # two fit
    assert bodies_of([line(f"r{i}", 100) for i in range(5)]) == [["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_the_validate_floor_sends_nothing_for_no_lines() -> None:
    assert bodies_of([]) == []
