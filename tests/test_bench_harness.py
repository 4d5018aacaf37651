"""The benchmark harness: which scenarios a run picks, the create floor's slicing at the API's limits, and
the export floor's checks."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
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


# -- the export floor's checks (one function for its file and S3 rows) -------------------------------


def export_client(body: bytes, counts: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> httpx.Client:
    """A client answering the batch and its results from memory, in 7-byte chunks (lines cut anywhere)."""
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps({"host": "http://api.test"}))

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/results"):
            return httpx.Response(200, stream=_Chunks(body))
        batch = {"results_url": "http://api.test/v1/messages/batches/b/results", "request_counts": counts}
        return httpx.Response(200, json=batch)

    return httpx.Client(transport=httpx.MockTransport(answer))


class _Chunks(httpx.SyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), 7):
            yield self.body[start : start + 7]


def result(custom_id: str, kind: str = "succeeded") -> bytes:
    return json.dumps({"custom_id": custom_id, "result": {"type": kind}}).encode() + b"\n"


def verified(
    body: bytes, counts: dict[str, int], monkeypatch: pytest.MonkeyPatch, job_ids: set[str] | None = None
) -> tuple[bytes, dict[str, int]]:
    """The floor's blocks and tally; ``job_ids``: the custom_ids the job submitted (default: the body's)."""
    from airflow_provider_batches.identity import digest_of

    if job_ids is None:
        job_ids = {json.loads(line)["custom_id"] for line in body.splitlines() if line.endswith(b"}")}
    tally = {"results": 0, "bytes": 0}
    with export_client(body, counts, monkeypatch) as client:
        return b"".join(variants._verified_blocks(client, "b", digest_of(job_ids), tally)), tally


def test_the_export_floor_passes_every_byte_of_a_good_batch_in_whole_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = result("a") + result("b", "errored") + result("c")
    out, tally = verified(body, {"processing": 0, "succeeded": 2, "errored": 1, "expired": 0}, monkeypatch)
    assert out == body
    assert tally == {"results": 3, "bytes": len(body)}


def test_the_export_floor_refuses_a_custom_id_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="custom_id twice"):
        verified(result("a") + result("a"), {"succeeded": 2}, monkeypatch)


def test_the_export_floor_refuses_counts_other_than_request_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="counts"):
        verified(result("a") + result("b"), {"succeeded": 1, "errored": 1}, monkeypatch)


def test_the_export_floor_refuses_results_of_other_custom_ids_than_the_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="other custom_ids"):
        verified(result("a") + result("b"), {"succeeded": 2}, monkeypatch, job_ids={"a", "c"})


def test_the_export_floor_refuses_a_custom_id_no_request_can_have(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="custom_id no request can have"):
        verified(result("a") + result("b c"), {"succeeded": 2}, monkeypatch)


def test_the_export_floor_refuses_a_blank_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="a blank line"):
        verified(result("a") + b"\n" + result("b"), {"succeeded": 2}, monkeypatch)


def test_the_export_floor_refuses_a_last_line_without_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="no newline"):
        verified(result("a") + result("b")[:-1], {"succeeded": 2}, monkeypatch)
