"""Items 1 and 5: pipelines against an emulator that injects faults, and the API key nowhere afterwards.

The fast test runs one fault-injected pipeline with ``airflow dags test`` and scans everything it left
behind; the slow one runs it 20 times and compares the published files run against run.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import BatchCreateUncertainError, ForeignResultsURLError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.airflow_harness import AirflowEnv
from tests.operators.support import task_context
from tests.reliability.conftest import (
    FIGURES,
    SECRET_KEY,
    ask,
    assert_no_secret,
    batches_created,
    connection,
    leaks_in_text,
    record_faults,
    scan_db,
    write_requests,
)
from tests.reliability.pipeline import WRONG_KEY, fresh_home, manifest, published, run_pipeline

pytestmark = pytest.mark.airflow

REQUESTS = 30


def check_run(outcome, emulator: Emulator, destination: Path, before: int) -> None:  # type: ignore[no-untyped-def]
    states = outcome.task_states()
    assert states["count_tokens"] == "success", outcome.output[-6000:]
    assert states["create_batch"] == "success", outcome.output[-6000:]
    assert states["results_to_storage"] == "success", outcome.output[-6000:]
    assert states["wrong_key"] == "failed"
    assert "authentication_error" in outcome.output
    created = batches_created(emulator) - before
    FIGURES["batches_duplicated"] += max(0, created - 1)
    assert created == 1, f"{created} batches were created for one job"
    batch_ids = outcome.xcom("create_batch")["batch_ids"]
    assert len(batch_ids) == 1
    assert manifest(destination)["batch_ids"] == batch_ids
    assert manifest(destination)["counts"]["succeeded"] == REQUESTS
    FIGURES["pipeline_runs"] += 1


def test_a_fault_injected_pipeline_run_completes_and_leaks_no_key(
    airflow_env: AirflowEnv, faulty_emulator: Emulator, tmp_path: Path
) -> None:
    env = fresh_home(airflow_env, tmp_path / "home")
    requests = write_requests(tmp_path / "requests.jsonl", REQUESTS)
    destination = tmp_path / "out" / "run-0"
    # Make sure this one run meets each fault at least once, whatever the seed draws.
    faulty_emulator.admin.set_config(next_faults=["529", "429", "drop", "500", "cut"])
    outcome = run_pipeline(env, faulty_emulator, requests, destination)
    stats = faulty_emulator.admin.stats()
    record_faults(stats)
    check_run(outcome, faulty_emulator, destination, before=0)
    assert published(destination)["succeeded.jsonl"].count(b"\n") == REQUESTS
    for fault in ("429", "500", "529", "drop", "cut"):
        assert stats["faults_injected"].get(fault), (fault, stats["faults_injected"])

    # Item 5 on this run: logs, the DB (XCom, rendered fields, triggers, task state...), manifests.
    found, rows = scan_db(env.db_path)
    assert rows["xcom"], rows
    assert rows["rendered_task_instance_fields"], rows
    assert not found
    # ``dags test`` runs tasks (and the trigger) in its own process: their logs are its output.
    assert "Created batch" in outcome.output
    assert "Retrying" in outcome.output
    assert_no_secret(env.home, tmp_path / "out", texts={"dags test output": outcome.output})
    assert WRONG_KEY not in outcome.output
    for path in env.home.rglob("*"):
        if path.is_file():
            assert WRONG_KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_twenty_fault_injected_runs_publish_identical_files_with_one_batch_each(
    airflow_env: AirflowEnv, faulty_emulator: Emulator, tmp_path: Path
) -> None:
    env = fresh_home(airflow_env, tmp_path / "home")
    requests = write_requests(tmp_path / "requests.jsonl", REQUESTS)
    outputs = []
    seen_batches: set[str] = set()
    # Exactly one results stream in five is cut (runs 0, 5, 10, 15), not a seeded share of them.
    faulty_emulator.admin.set_config(cut_results_fraction=0.0)
    for run in range(20):
        destination = tmp_path / "out" / f"run-{run}"
        if run % 5 == 0:
            faulty_emulator.admin.set_config(next_faults=["cut"])
        before = batches_created(faulty_emulator)
        outcome = run_pipeline(env, faulty_emulator, requests, destination)
        check_run(outcome, faulty_emulator, destination, before)
        batch_id = outcome.xcom("create_batch")["batch_ids"][0]
        assert batch_id not in seen_batches, f"run {run} adopted the batch of an earlier run"
        seen_batches.add(batch_id)
        outputs.append(published(destination))
    stats = faulty_emulator.admin.stats()
    record_faults(stats)
    assert stats["faults_injected"].get("cut") == 4  # one results stream in five
    assert all(output == outputs[0] for output in outputs), "the published files differ between runs"
    assert set(outputs[0]) == {"succeeded.jsonl", "errored.jsonl", "canceled.jsonl", "expired.jsonl"}
    assert sum(stats["batches_created"].values()) == 20
    assert_no_secret(env.home, tmp_path / "out")


# -- a results_url on another host ----------------------------------------------------------------


class Listener:
    """A loopback TCP server that records whatever reaches it (it never answers)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.received = b""
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            client.settimeout(0.5)
            with contextlib.suppress(OSError):
                self.received += client.recv(65536)
            client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("foreign", ["other_port", "other_host_name"])
def test_a_foreign_results_url_is_refused_without_sending_the_key(
    emulator: Emulator, listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, foreign: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection(emulator))
    port = emulator.base_url.rsplit(":", 1)[1]
    # "localhost" reaches the same emulator: if the key were sent, the emulator's stats would show it.
    public = listener.url if foreign == "other_port" else f"http://localhost:{port}"
    emulator.admin.set_config(processing_seconds=0, public_base_url=public)
    batch = AnthropicHook().create_batch([ask("a")])
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=batch.id, destination=f"file://{tmp_path}/out/"
    )
    with pytest.raises(ForeignResultsURLError, match="the API key is not sent there") as raised:
        operator.execute(task_context())
    assert not leaks_in_text(str(raised.value))
    assert listener.connections == 0
    assert SECRET_KEY.encode() not in listener.received
    calls = emulator.admin.stats()["calls"]
    assert not [route for route in calls if route.endswith("/results")], calls
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.jsonl"))


def test_a_lost_create_never_adopts_an_earlier_batch_of_the_same_size(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous run of the same job made a batch of the same size a moment ago; this run's create
    is answered 500 (nothing made). The lookup must not take the earlier batch for the lost one."""
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection(emulator))
    hook = AnthropicHook()
    earlier = hook.create_batch([ask("a"), ask("b")])
    emulator.admin.set_config(next_faults=["ok", "500"])  # the watermark listing passes, the create fails
    with pytest.raises(BatchCreateUncertainError, match="no batch of 2 requests") as raised:
        hook.create_batch([ask("a"), ask("b")])
    assert raised.value.candidate_batch_ids == []
    assert f"listed since batch {earlier.id}" in str(raised.value)
    assert batches_created(emulator) == 1
