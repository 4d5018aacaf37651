"""The transfer's hot path: whole-line blocks, decoded once and written once, whatever the chunks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_batches.result_lines import BLOCK_BYTES
from airflow_provider_batches.transfers.verification import BatchLedger, ResultsVerificationError
from airflow_provider_batches.transfers.writer import TransferProgress, copy_results
from tests.transfers.conftest import jsonl, result_line


class Sink:
    """A staged file that records its writes."""

    whole_lines = False

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes | memoryview) -> None:
        self.writes.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


def copied(chunks: list[bytes]) -> tuple[Sink, BatchLedger]:
    sink = Sink()
    ledger = BatchLedger(batch=SimpleNamespace(id="msgbatch_1"))  # type: ignore[arg-type]  # not finished
    copy_results(chunks, ledger, lambda _kind: sink, TransferProgress(None, 1e9))  # type: ignore[arg-type, return-value]
    return sink, ledger


SMALL = jsonl([result_line("a"), result_line("b", "errored"), result_line("c", "expired")])


def test_a_line_cut_at_any_byte_is_verified_and_written_once() -> None:
    for cut in range(len(SMALL) + 1):
        sink, ledger = copied([SMALL[:cut], SMALL[cut:]])

        assert sink.data == SMALL, cut
        assert ledger.results == 3, cut


def test_the_received_bytes_are_written_in_one_write_per_block() -> None:
    data = jsonl([result_line(f"r-{index}", padding=500) for index in range(2_000)])
    chunks = [data[start : start + 65_536] for start in range(0, len(data), 65_536)]

    sink, ledger = copied(chunks)

    assert sink.data == data
    assert ledger.results == 2_000
    assert len(sink.writes) <= len(data) // BLOCK_BYTES + 1
    assert all(write.endswith(b"\n") for write in sink.writes)


def test_crlf_and_blank_lines_are_written_as_lf_lines_and_a_last_line_gets_its_newline() -> None:
    received = SMALL.replace(b"\n", b"\r\n", 1).replace(b"\n", b"\n\n", 2)[:-1]

    sink, ledger = copied([received[:50], received[50:]])

    assert sink.data == SMALL
    assert ledger.results == 3


def test_a_bad_line_is_named_by_its_number_whatever_the_block() -> None:
    data = SMALL + b'{"custom_id": "d", "result": {"type": \n' + SMALL

    with pytest.raises(ResultsVerificationError, match="line 4 is not valid JSON"):
        copied([data])
