"""Which failures a later round sent again: the rule the error summary shares with round planning."""

from __future__ import annotations

from airflow_provider_batches.job_state import JobRecord, RoundKind, RoundRecord
from airflow_provider_batches.operators.rounds import sent_again
from airflow_provider_batches.redrive import Redrive


def record_with(*rounds: RoundRecord) -> JobRecord:
    return JobRecord(rounds=[RoundRecord(1, "f" * 64, 3, [], kind="first"), *rounds])


def follow_up(number: int, kind: RoundKind, resumed: list[str] | None = None) -> RoundRecord:
    return RoundRecord(number, "f" * 64, 1, [], kind=kind, resumed_batches=resumed or [])


REDRIVE = Redrive(max_rounds=2)


def test_a_transient_error_of_round_1_was_sent_again_by_a_redrive_round_2() -> None:
    record = record_with(follow_up(2, "redrive"))

    assert sent_again(record, REDRIVE, 1, "msgbatch_a", "errored", "overloaded_error")


def test_a_transient_error_before_a_resume_round_was_not_sent_again() -> None:
    """Round 2 (re-drive) ends with an overloaded error in a batch that was then canceled; round 3
    resumes only that batch's unfinished requests, so the error is a final failure."""
    record = record_with(follow_up(2, "redrive"), follow_up(3, "resume", ["msgbatch_b"]))

    assert not sent_again(record, REDRIVE, 2, "msgbatch_b", "errored", "overloaded_error")


def test_an_expired_request_of_a_resumed_batch_was_sent_again_without_redrive() -> None:
    record = record_with(follow_up(2, "resume", ["msgbatch_a"]))

    assert sent_again(record, None, 1, "msgbatch_a", "expired", None)


def test_an_expired_request_of_a_batch_that_was_not_resumed_was_not_sent_again() -> None:
    record = record_with(follow_up(2, "resume", ["msgbatch_a"]))

    assert not sent_again(record, None, 1, "msgbatch_other", "expired", None)


def test_a_failure_of_the_last_round_was_not_sent_again() -> None:
    record = record_with(follow_up(2, "redrive"))

    assert not sent_again(record, REDRIVE, 2, "msgbatch_a", "errored", "overloaded_error")
