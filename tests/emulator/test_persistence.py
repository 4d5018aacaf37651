"""--data-dir keeps batches, their state and their results across restarts."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_batches.emulator import ManualClock
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import batch_request, sdk_client


def test_batches_survive_a_restart_with_data_dir(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    clock = ManualClock()
    with make_emulator(clock=clock, data_dir=tmp_path, processing_seconds=10) as emu:
        client = sdk_client(emu)
        ended = client.messages.batches.create(requests=[batch_request("a"), batch_request("b")])
        clock.advance(10)
        client.messages.batches.retrieve(ended.id)
        running = client.messages.batches.create(requests=[batch_request("c")])
    with make_emulator(clock=clock, data_dir=tmp_path, processing_seconds=10) as emu:
        client = sdk_client(emu)
        assert [b.id for b in client.messages.batches.list()] == [running.id, ended.id]
        assert client.messages.batches.retrieve(ended.id).request_counts.succeeded == 2
        assert {line.custom_id for line in client.messages.batches.results(ended.id)} == {"a", "b"}
        assert client.messages.batches.retrieve(running.id).processing_status == "in_progress"
        clock.advance(10)
        assert client.messages.batches.retrieve(running.id).processing_status == "ended"
        newest = client.messages.batches.create(requests=[batch_request("d")])
        assert client.messages.batches.list(limit=1).data[0].id == newest.id


def test_temporary_data_is_removed_on_stop(make_emulator: EmulatorFactory) -> None:
    with make_emulator() as emu:
        sdk_client(emu).messages.batches.create(requests=[batch_request("a")])
        root = emu.state.store.root
        assert any(root.iterdir())
    assert not root.exists()


def test_deleted_batch_files_are_removed(make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    with make_emulator(data_dir=tmp_path) as emu:
        client = sdk_client(emu)
        batch = client.messages.batches.create(requests=[batch_request("a")])
        list(client.messages.batches.results(batch.id))
        client.messages.batches.delete(batch.id)
    assert not list(tmp_path.glob(f"{batch.id}*"))
