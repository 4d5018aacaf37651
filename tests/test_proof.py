"""The proof request and the candidate search, stepped by hand: what counts as proof, and what never does."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from airflow_provider_batches.client_core import CreateWatermark, create_candidates_plan
from airflow_provider_batches.errors import APIConnectionError, BatchCreateUncertainError
from airflow_provider_batches.proof import (
    PROOF_PREFIX,
    PROOF_RESERVED_BYTES,
    READ_ATTEMPTS,
    counts_without_proofs,
    find_proof,
    holds_proof_id,
    new_proof_id,
    proof_request,
    read_proof,
)
from airflow_provider_batches.requests import MAX_REQUESTS_PER_BATCH, RequestSource, prepare_job
from tests.fakes import batch_json, listing_json
from tests.plans import PlanRun, settings

PROOF = PROOF_PREFIX + "0123456789abcdef0123456789abcdef"


def result_line(custom_id: str, kind: str = "succeeded", text: str = "ok") -> bytes:
    result: dict[str, Any] = {"type": kind}
    if kind == "succeeded":
        result["message"] = {"content": [{"type": "text", "text": text}]}
    return json.dumps({"custom_id": custom_id, "result": result}).encode() + b"\n"


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


# -- the nonce and the request ---------------------------------------------------------------------


def test_each_create_draws_its_own_valid_custom_id() -> None:
    drawn = {new_proof_id() for _ in range(1000)}

    assert len(drawn) == 1000
    assert all(len(proof_id) <= 64 and proof_id.startswith(PROOF_PREFIX) for proof_id in drawn)


def test_the_proof_request_asks_one_token_of_one_character() -> None:
    encoded = proof_request(PROOF, "claude-haiku-4-5")

    assert json.loads(encoded) == {
        "custom_id": PROOF,
        "params": {
            "model": "claude-haiku-4-5",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "."}],
        },
    }
    assert len(encoded) + 1 <= PROOF_RESERVED_BYTES


def test_slicing_keeps_room_in_the_byte_limit_for_the_proof() -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 300}]}
    requests = [{"custom_id": f"r{index}", "params": body} for index in range(6)]
    two = prepare_job(RequestSource(requests=requests[:2])).slices[0].size  # a body of two requests
    limit = two + PROOF_RESERVED_BYTES

    job = prepare_job(RequestSource(requests=requests), max_bytes=limit)
    tight = prepare_job(RequestSource(requests=requests), max_bytes=limit - 1)

    assert [part.count for part in job.slices] == [2, 2, 2]
    assert [part.count for part in tight.slices] == [1] * 6  # no room for the proof beside two
    body_bytes = b"".join(job.body(job.slices[0], PROOF).chunks())
    assert len(body_bytes) <= limit
    assert [entry["custom_id"] for entry in json.loads(body_bytes)["requests"]] == ["r0", "r1", PROOF]


def test_a_batch_holds_at_most_99999_of_the_jobs_requests() -> None:
    requests = [
        {
            "custom_id": f"r{index}",
            "params": {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
        }
        for index in range(MAX_REQUESTS_PER_BATCH)
    ]

    job = prepare_job(RequestSource(requests=requests))

    assert [part.count for part in job.slices] == [MAX_REQUESTS_PER_BATCH - 1, 1]


# -- finding the proof in results --------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 3, 6])
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_the_proof_is_found_anywhere_in_the_results_whatever_the_chunks(position: int, chunk: int) -> None:
    lines = [result_line(f"q-{index}") for index in range(6)]
    lines.insert(position, result_line(PROOF, "errored"))

    assert find_proof(chunked(b"".join(lines), chunk), PROOF) == "errored"


def test_the_proof_on_a_last_line_without_a_newline_is_found() -> None:
    data = result_line("q-0") + result_line(PROOF).rstrip(b"\n")

    assert find_proof(chunked(data, 5), PROOF) == "succeeded"


def test_the_nonce_quoted_in_another_requests_answer_proves_nothing() -> None:
    data = result_line("q-0", text=f"the id is {PROOF}") + result_line(PROOF_PREFIX + "f" * 32)

    assert find_proof([data], PROOF) is None


def test_a_block_holds_a_proof_id_only_when_one_starts_with_the_prefix() -> None:
    assert holds_proof_id(["q-0", "q-1", PROOF])
    assert holds_proof_id([PROOF, "q-0"], f"{PROOF}\nq-0")
    assert not holds_proof_id(["q-0", f"x-{PROOF}"[:64], "q-1"])  # the prefix inside an id is no proof
    assert not holds_proof_id([])


def test_reading_stops_at_the_proof_line() -> None:
    read: list[bytes] = []

    def stream() -> Any:
        for part in (result_line(PROOF), result_line("q-0")):
            read.append(part)
            yield part

    assert find_proof(stream(), PROOF) == "succeeded"
    assert len(read) == 1


def test_the_proof_is_left_out_of_the_counts_read_from_the_results_only_when_needed() -> None:
    read: list[str] = []

    def results(batch_id: str) -> list[bytes]:
        read.append(batch_id)
        return [result_line("q-0"), result_line(PROOF, "errored")]

    counts = {
        "alike": {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0},
        "mixed": {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 0, "expired": 0},
        "plain": {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0},
    }
    kinds: dict[str, str | None] = {}

    user = counts_without_proofs(counts, {"alike": "x", "mixed": PROOF}, results, kinds)

    assert user["alike"]["succeeded"] == 2
    assert user["mixed"] == {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0}
    assert user["plain"] == counts["plain"]
    assert read == ["mixed"]
    assert kinds == {"alike": "succeeded", "mixed": "errored"}


# -- the candidate search ------------------------------------------------------------------------------


def listing(*batches: dict[str, Any], has_more: bool = False) -> httpx.Response:
    return httpx.Response(200, json=listing_json(*batches, has_more=has_more))


def at(batch_id: str, minute: int, total: int = 3, **fields: Any) -> dict[str, Any]:
    return batch_json(batch_id, total=total, created_at=f"2026-12-04T10:{minute:02d}:00Z", **fields)


WATERMARK = CreateWatermark.from_json(
    {"newest_id": "b_old", "newest_created_at": "2026-12-04T10:00:00+00:00"}
)


def test_candidates_are_every_same_size_batch_since_the_watermark_canceled_ones_too() -> None:
    page = listing(
        at("b_4", 4),
        at("b_3", 3, total=7),
        at("b_2", 2, cancel_initiated_at="2026-12-04T10:02:30Z"),
        at("b_mine", 1),
        at("b_old", 0),
        at("b_older", 0),
    )

    found = PlanRun(create_candidates_plan(settings(), WATERMARK, 3, exclude=["b_mine"]), page).result()

    assert [batch.id for batch in found.batches] == ["b_4", "b_2"]
    assert found.until.newest_id == "b_4"


def test_a_later_search_never_looks_past_the_first_searchs_bound() -> None:
    first = CreateWatermark.from_json({"newest_id": "b_2", "newest_created_at": "2026-12-04T10:02:00+00:00"})
    page = listing(at("b_9", 9), at("b_5", 5), at("b_2", 2), at("b_1", 1), at("b_old", 0))

    found = PlanRun(create_candidates_plan(settings(), WATERMARK, 3, until=first), page).result()

    assert [batch.id for batch in found.batches] == ["b_2", "b_1"]
    assert found.until == first


def test_a_bound_whose_batch_was_deleted_is_kept_by_its_time() -> None:
    first = CreateWatermark.from_json(
        {"newest_id": "b_gone", "newest_created_at": "2026-12-04T10:02:00+00:00"}
    )
    page = listing(at("b_5", 5), at("b_2", 2), at("b_old", 0))

    found = PlanRun(create_candidates_plan(settings(), WATERMARK, 3, until=first), page).result()

    assert [batch.id for batch in found.batches] == ["b_2"]


def test_a_listing_that_never_reaches_the_watermark_names_what_it_saw_and_acts_on_nothing() -> None:
    page = listing(at("b_5", 5), has_more=True)

    with pytest.raises(BatchCreateUncertainError, match="no batch was adopted or canceled") as uncertain:
        PlanRun(create_candidates_plan(settings(), WATERMARK, 3, max_pages=2), page).result()

    assert (
        uncertain.value.candidate_batch_ids == ["b_5", "b_5"] or "b_5" in uncertain.value.candidate_batch_ids
    )


def test_a_broken_results_stream_is_read_again_from_the_start() -> None:
    attempts: list[int] = []

    def results(batch_id: str) -> Any:
        attempts.append(1)
        yield result_line("q-0")
        if len(attempts) < READ_ATTEMPTS:
            raise APIConnectionError("the results stream broke off")
        yield result_line(PROOF, "expired")

    assert read_proof(results, "b", PROOF) == "expired"
    assert len(attempts) == READ_ATTEMPTS


def test_a_stream_that_keeps_breaking_fails_instead_of_guessing() -> None:
    def results(batch_id: str) -> Any:
        yield result_line("q-0")
        raise APIConnectionError("the results stream broke off")

    with pytest.raises(APIConnectionError):
        read_proof(results, "b", PROOF)
