"""The API key in every form it arrives in (file-mounted with a newline, padded, odd but valid) is
sent stripped, and shows in no log line, exception, message or serialized trigger: against the
emulator over real sockets, and on a closed port for the connection-error paths."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.errors import AnthropicBatchesError, ConnectionConfigError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger
from tests.operators.support import requests, task_context

BASE = "sk-ant-api03-Zx9_Yw8-Vu7Ts6Rq5"
#: Forms a key takes when mounted from a file or pasted: the stripped key is what must never show.
KEY_FORMS = {
    "trailing-lf": (BASE + "\n", BASE),
    "trailing-crlf": (BASE + "\r\n", BASE),
    "spaces": ("  " + BASE + "  ", BASE),
    "tab-and-lf": ("\t" + BASE + "\n\n", BASE),
    "odd-but-valid": (" sk-ant~a.b+c/d=e:f@g!h*j'k\"l\\m\n", "sk-ant~a.b+c/d=e:f@g!h*j'k\"l\\m"),
    "inner-space": ("sk-ant key with spaces\r\n", "sk-ant key with spaces"),
}
FORM_IDS = list(KEY_FORMS)


def forms_of(key: str) -> list[str]:
    """The stripped key as it could be printed: as is, escaped, in a repr, as bytes."""
    return [key, repr(key)[1:-1], key.encode("unicode_escape").decode(), repr(key.encode())[2:-1]]


def assert_no_key(key: str, *texts: str) -> None:
    for text in texts:
        for form in forms_of(key):
            assert form not in text, f"the key leaked as {form!r} in {text[:300]!r}"


def set_key(monkeypatch: pytest.MonkeyPatch, host: str, raw_key: str, **extra: Any) -> None:
    conn = {"conn_type": "anthropic_batches", "host": host, "password": raw_key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps(conn))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(params=FORM_IDS)
def key_form(request: pytest.FixtureRequest) -> tuple[str, str]:
    return KEY_FORMS[request.param]


@pytest.fixture
def emulator_for(key_form: tuple[str, str]) -> Iterator[Emulator]:
    """An emulator that accepts the stripped key only."""
    config = EmulatorConfig(processing_seconds=0, canceling_seconds=0, api_keys=[key_form[1]])
    with Emulator(config) as emulator:
        yield emulator


def test_the_stripped_key_is_sent_and_accepted(
    monkeypatch: pytest.MonkeyPatch, key_form: tuple[str, str], emulator_for: Emulator
) -> None:
    raw, key = key_form
    set_key(monkeypatch, emulator_for.base_url, raw)
    hook = AnthropicHook()

    assert hook.get_settings().api_key == key
    assert hook.list_batches(limit=1).data == []


def test_test_connection_messages_hold_no_key(
    monkeypatch: pytest.MonkeyPatch,
    key_form: tuple[str, str],
    emulator_for: Emulator,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw, key = key_form
    caplog.set_level(logging.DEBUG)
    set_key(monkeypatch, emulator_for.base_url, raw)
    ok, accepted = AnthropicHook().test_connection()
    set_key(monkeypatch, closed_port_url(), raw, max_retries=1, max_retry_wait=1)
    failed, unreachable = AnthropicHook().test_connection()

    assert ok
    assert not failed
    captured = capsys.readouterr()
    assert_no_key(key, accepted, unreachable, caplog.text, captured.out, captured.err)


def test_connection_errors_and_retry_warnings_hold_no_key(
    monkeypatch: pytest.MonkeyPatch,
    key_form: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw, key = key_form
    caplog.set_level(logging.DEBUG)
    set_key(monkeypatch, closed_port_url(), raw, max_retries=2, max_retry_wait=2)

    with pytest.raises(AnthropicBatchesError) as raised:
        AnthropicHook().get_batch("msgbatch_01abc")

    assert "Retrying" in caplog.text
    captured = capsys.readouterr()
    assert_no_key(key, str(raised.value), repr(raised.value), caplog.text, captured.out, captured.err)


def test_retry_warnings_after_server_errors_hold_no_key(
    monkeypatch: pytest.MonkeyPatch,
    key_form: tuple[str, str],
    emulator_for: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw, key = key_form
    caplog.set_level(logging.DEBUG)
    emulator_for.admin.set_config(next_faults=["529", "drop"], retry_after_ms=1)
    set_key(monkeypatch, emulator_for.base_url, raw, max_retries=3)

    AnthropicHook().list_batches(limit=1)

    assert caplog.text.count("Retrying") == 2
    assert_no_key(key, caplog.text)


def test_an_operator_failure_holds_no_key(
    monkeypatch: pytest.MonkeyPatch, key_form: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    raw, key = key_form
    caplog.set_level(logging.DEBUG)
    set_key(monkeypatch, closed_port_url(), raw, max_retries=1, max_retry_wait=1)
    operator = AnthropicCreateBatchOperator(task_id="create", requests=requests(1), deferrable=False)

    with pytest.raises(AnthropicBatchesError) as raised:
        operator.execute(task_context())

    assert_no_key(key, str(raised.value), repr(raised.value), caplog.text, repr(operator))


def test_the_trigger_serializes_and_reports_without_the_key(
    monkeypatch: pytest.MonkeyPatch, key_form: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    raw, key = key_form
    caplog.set_level(logging.DEBUG)
    set_key(monkeypatch, closed_port_url(), raw, max_retries=0)
    trigger = AnthropicBatchTrigger(batch_ids=["msgbatch_01abc"], deadline=time.time() + 2, poll_interval=0.1)

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())

    assert event["status"] in ("error", "timeout")
    assert_no_key(key, json.dumps(trigger.serialize()), json.dumps(event), caplog.text)


def test_every_form_is_registered_with_the_secrets_masker(
    monkeypatch: pytest.MonkeyPatch, key_form: tuple[str, str]
) -> None:
    raw, key = key_form
    set_key(monkeypatch, "http://127.0.0.1:9", raw)
    AnthropicHook().get_settings()

    redacted = str(_masker().redact(f"as given {raw} | repr {raw!r} | stripped {key} | {key!r}"))

    assert_no_key(key, redacted)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("sk-ant-abc\ndef-ghi", "line break"),
        ("sk-ant-abc\r\ndef-ghi", "line break"),
        ("sk-ant-abc\x00def-ghi", "control character"),
        ("sk-ant-abc\x7fdef-ghi", "control character"),
        ("sk-ant-abcdéf-ghi", "not ASCII"),
        ("sk-ant-abc\u2028def-ghi", "not ASCII"),
    ],
    ids=["lf", "crlf", "nul", "del", "accent", "line-separator"],
)
def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, raw: str, kind: str
) -> None:
    set_key(monkeypatch, "http://127.0.0.1:9", raw)

    with pytest.raises(ConnectionConfigError, match=kind) as raised:
        AnthropicHook().get_settings()
    ok, message = AnthropicHook().test_connection()

    assert not ok
    for part in ("sk-ant-abc", "def-ghi", raw):
        assert part not in str(raised.value)
        assert part not in message


def _masker() -> Any:
    try:
        from airflow.sdk.log import _secrets_masker  # Airflow 3.2+

        return _secrets_masker()
    except ImportError:  # Airflow 3.1
        from airflow.sdk.execution_time.secrets_masker import _secrets_masker as masker

        return masker()


def test_a_gateway_echoing_the_key_in_an_error_body_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from tests.fakes import Recorder, error

    set_key(monkeypatch, "http://api.test", BASE + "\n", max_retries=0)
    hook = AnthropicHook(
        transport=Recorder(error(401, "authentication_error", f"bad x-api-key: {BASE}")).transport()
    )

    with pytest.raises(AnthropicBatchesError) as raised:
        hook.get_batch("msgbatch_01abc")

    assert "bad x-api-key: ***" in str(raised.value)
    assert isinstance(hook.get_conn()._transport, httpx.MockTransport)  # the answer came from the script


def test_a_request_httpx_cannot_build_fails_without_quoting_its_headers() -> None:
    import httpx

    from airflow_provider_batches.client_core import Call, ClientSettings, request_plan, run_sync

    with socket.socket() as listening:  # accepts connections (the kernel's backlog), never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        settings = ClientSettings(api_key="sk-ant-not\nchecked", base_url=url, max_retries=0)
        with httpx.Client() as client, pytest.raises(AnthropicBatchesError) as raised:
            run_sync(request_plan(settings, Call("GET", "/v1/messages/batches")), client)

    assert "not" not in str(raised.value).replace("could not", "")
    assert raised.value.__cause__ is None


def test_a_whole_job_leaves_the_key_in_no_xcom_state_manifest_facet_or_log(
    monkeypatch: pytest.MonkeyPatch,
    key_form: tuple[str, str],
    emulator_for: Emulator,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_batches.transfers.results_to_object_storage import (
        AnthropicBatchResultsToObjectStorageOperator,
    )
    from tests.operators.support import FakeTaskStateStore

    raw, key = key_form
    caplog.set_level(logging.DEBUG)
    set_key(monkeypatch, emulator_for.base_url, raw)
    store = FakeTaskStateStore()
    context = task_context(store)
    create = AnthropicCreateBatchOperator(task_id="create", requests=requests(2), deferrable=False)
    manifest = create.execute(context)
    results = AnthropicBatchResultsToObjectStorageOperator(
        task_id="results", batch_id=manifest, destination=f"file://{tmp_path}/"
    )
    written = results.execute(task_context())
    facets = [repr(op.get_openlineage_facets_on_complete(None)) for op in (create, results)]

    outputs = "".join(path.read_text() for path in tmp_path.rglob("*") if path.is_file())
    captured = capsys.readouterr()
    assert_no_key(
        key,
        json.dumps(manifest),
        json.dumps(written),
        json.dumps(context["ti"].xcoms, default=str),
        json.dumps(store.values, default=str),
        outputs,
        *facets,
        caplog.text,
        captured.out,
        captured.err,
        json.dumps(emulator_for.admin.config()),
        json.dumps(emulator_for.admin.stats()),
    )


def test_a_server_answering_the_key_as_a_batch_id_does_not_get_it_into_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "sk-ant-api03-abcDEF_123-xyz"
    config = EmulatorConfig(processing_seconds=3600, api_keys=[key])
    with Emulator(config) as emulator:
        set_key(monkeypatch, emulator.base_url, key + "\n")
        hook = AnthropicHook()
        created = hook.create_batch(requests(1))
        emulator.admin.set_config(answer_batch_id=key)  # a shape a batch id may have

        with pytest.raises(AnthropicBatchesError) as raised:
            hook.get_batch(created.id)

    assert_no_key(key, str(raised.value))
    assert "the answer is about batch ***" in str(raised.value)
