"""Item 4: a corpus of malformed inputs, each refused with a message that names the problem, before any
call that could spend money.

Every case runs the real operator (``execute`` with a task context, the connection pointing at a live
emulator that accepts the suite's key), so a case that slipped through validation would reach the API
and show in the emulator's stats. The module ends by checking those stats: no batch was created, and
no create call was even attempted.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import ConnectionConfigError, RequestValidationError
from airflow_provider_batches.operators.batches import (
    AnthropicCancelBatchOperator,
    AnthropicCreateBatchOperator,
    AnthropicDeleteBatchOperator,
)
from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator
from airflow_provider_batches.requests import MAX_REQUESTS_PER_BATCH, RequestSource, prepare_job
from airflow_provider_batches.sensors.batches import AnthropicBatchSensor
from airflow_provider_batches.transfers.results_to_object_storage import (
    AnthropicBatchResultsToObjectStorageOperator,
)
from tests.operators.support import batches_created, task_context
from tests.reliability.conftest import (
    FIGURES,
    MODEL,
    SECRET_KEY,
    ask,
    connection,
    leaks_in_text,
    start_emulator,
)

OK = json.dumps(ask("ok-1")).encode()


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it (given a tmp dir) and words its error message must contain."""

    name: str
    build: Callable[[Path], Callable[[], Any]]
    expect: tuple[str, ...]
    error: type[BaseException] = RequestValidationError


def create_from_file(content: bytes, name: str = "requests.jsonl", **kwargs: Any) -> Callable[[Path], Any]:
    """A create task reading ``content`` from a file."""

    def build(tmp: Path) -> Callable[[], Any]:
        path = tmp / name
        path.write_bytes(content)
        operator = AnthropicCreateBatchOperator(
            task_id="create", requests_path=f"file://{path}", deferrable=False, **kwargs
        )
        return lambda: operator.execute(task_context())

    return build


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def with_params(**params: Any) -> bytes:
    request = ask("bad-1")
    request["params"].update(params)
    return OK + b"\n" + line({key: value for key, value in request.items()})


def without_param(name: str) -> bytes:
    request = ask("bad-1")
    del request["params"][name]
    return OK + b"\n" + line(request)


def create_inline(requests: Any, **kwargs: Any) -> Callable[[Path], Any]:
    def build(tmp: Path) -> Callable[[], Any]:
        operator = AnthropicCreateBatchOperator(
            task_id="create", requests=requests, deferrable=False, **kwargs
        )
        return lambda: operator.execute(task_context())

    return build


def construct(factory: Callable[[], Any]) -> Callable[[Path], Any]:
    """A bad argument refused when the DAG is parsed (the operator's constructor)."""
    return lambda tmp: factory


def rendered(template: str, params: dict[str, Any]) -> Callable[[Path], Any]:
    """A templated requests_path rendered against ``params`` (as Airflow renders it), then executed."""

    def build(tmp: Path) -> Callable[[], Any]:
        operator = AnthropicCreateBatchOperator(task_id="create", requests_path=template, deferrable=False)

        def run() -> Any:
            operator.render_template_fields({"params": params})
            return operator.execute(task_context())

        return run

    return build


def oversized_request(tmp: Path) -> Callable[[], Any]:
    """One request of 257 MB: no batch can hold it, whatever the split."""
    path = tmp / "huge.jsonl"
    with path.open("wb") as out:
        out.write(OK + b"\n")
        head = json.dumps(ask("huge-1", "")).encode()
        marker = b'"content": ""'
        before, after = head.split(marker)
        out.write(before + b'"content": "')
        chunk = b"x" * (1 << 20)
        for _ in range(257):
            out.write(chunk)
        out.write(b'"' + after + b"\n")
    operator = AnthropicCreateBatchOperator(task_id="create", requests_path=str(path), deferrable=False)
    return lambda: operator.execute(task_context())


def hundred_thousand_and_one(tmp: Path) -> Callable[[], Any]:
    """100,001 requests are one too many for one batch: with splitting forbidden, they are refused."""
    path = tmp / "big.jsonl"
    template = json.dumps(ask("ID", "hi")).encode()
    with path.open("wb") as out:
        out.writelines(template.replace(b"ID", f"r{i}".encode()) + b"\n" for i in range(100_001))
    operator = AnthropicCreateBatchOperator(
        task_id="create", requests_path=str(path), deferrable=False, max_requests_per_batch=100_001
    )
    return lambda: operator.execute(task_context())


def transfer(tmp: Path, **kwargs: Any) -> Callable[[], Any]:
    kwargs.setdefault("destination", f"file://{tmp}/out/")
    operator = AnthropicBatchResultsToObjectStorageOperator(task_id="results", **kwargs)
    return lambda: operator.execute(task_context())


def raw_request(envelope: str, params: str) -> bytes:
    """A line written by hand (duplicate keys, 1e400...): ``{<envelope>,"params":{<params>...}}``."""
    body = f'"model":"{MODEL}","max_tokens":40,"messages":[{{"role":"user","content":"hi"}}]'
    return f'{{{envelope},"params":{{{params}{body}}}}}\n'.encode()


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def duplicates_far_apart() -> bytes:
    lines = [line(ask(f"r{i}")) for i in range(50)] + [line(ask("r7"))]
    return b"".join(lines)


def gzip_truncated() -> bytes:
    return gzip.compress(OK * 200)[:60]


CASES: list[Case] = [
    # -- requests files: JSON --
    Case(
        "bad JSON", create_from_file(OK + b'\n{"custom_id": "b", "params": {\n'), ("line 2", "not valid JSON")
    ),
    Case(
        "JSON array line", create_from_file(OK + b"\n[1, 2]\n"), ("line 2", "must be a JSON object", "list")
    ),
    Case("JSON string line", create_from_file(b'"just a string"\n'), ("line 1", "must be a JSON object")),
    Case(
        "invalid UTF-8",
        create_from_file(OK + b'\n{"custom_id": "b\xff"}\n'),
        ("line 2", "not valid JSON", "utf-8"),
    ),
    Case("NaN literal", create_from_file(with_params(temperature=float("nan"))), ("line 2", "NaN")),
    Case("empty file", create_from_file(b""), ("no requests", "empty")),
    Case("blank lines only", create_from_file(b"\n  \n\n"), ("no requests", "empty")),
    Case(
        "not gzip",
        create_from_file(OK, name="requests.jsonl.gz"),
        ("requests.jsonl.gz", "cannot be read", "gzip"),
    ),
    Case(
        "truncated gzip",
        create_from_file(gzip_truncated(), name="cut.jsonl.gz"),
        ("cut.jsonl.gz", "cannot be read"),
    ),
    # -- custom_id --
    Case(
        "custom_id missing",
        create_from_file(line({"params": ask("x")["params"]})),
        ("line 1", "custom_id is missing"),
    ),
    Case("custom_id empty", create_from_file(line(ask(""))), ("line 1", "custom_id ''", "pattern")),
    Case("custom_id 65 chars", create_from_file(line(ask("x" * 65))), ("custom_id 'xxxx", "1 to 64")),
    Case(
        "custom_id with space",
        create_from_file(OK + b"\n" + line(ask("has space"))),
        ("line 2", "'has space'", "invalid"),
    ),
    Case("custom_id with slash", create_from_file(line(ask("a/b"))), ("'a/b'", "invalid")),
    Case(
        "custom_id not a string",
        create_from_file(line({"custom_id": 12, "params": ask("x")["params"]})),
        ("custom_id 12", "invalid"),
    ),
    Case(
        "duplicate custom_id",
        create_from_file(OK + b"\n" + OK + b"\n"),
        ("line 2", "'ok-1'", "duplicates the one at line 1"),
    ),
    Case(
        "duplicate far apart",
        create_from_file(duplicates_far_apart()),
        ("line 51", "'r7'", "duplicates the one at line 8"),
    ),
    Case(
        "unknown top-level key",
        create_from_file(line({**ask("x"), "priority": 1})),
        ("'priority'", "unknown key"),
    ),
    # -- params --
    Case(
        "params missing", create_from_file(line({"custom_id": "x"})), ("custom_id 'x'", "params is missing")
    ),
    Case(
        "params not an object",
        create_from_file(line({"custom_id": "x", "params": [1]})),
        ("params must be an object", "list"),
    ),
    Case(
        "model missing",
        create_from_file(without_param("model")),
        ("line 2", "params.model is missing", "model="),
    ),
    Case(
        "model not a string",
        create_from_file(with_params(model=4)),
        ("line 2", "'bad-1'", "params.model must be a string, got 4"),
    ),
    Case("model empty", create_from_file(with_params(model="")), ("params.model must be a string, got ''",)),
    Case(
        "max_tokens missing", create_from_file(without_param("max_tokens")), ("params.max_tokens is missing",)
    ),
    Case(
        "max_tokens zero",
        create_from_file(with_params(max_tokens=0)),
        ("line 2", "'bad-1'", "params.max_tokens must be an integer from 1 to 1,000,000, got 0"),
    ),
    Case("max_tokens negative", create_from_file(with_params(max_tokens=-5)), ("max_tokens", "-5")),
    Case("max_tokens a string", create_from_file(with_params(max_tokens="10")), ("max_tokens", "'10'")),
    Case("max_tokens a float", create_from_file(with_params(max_tokens=1.5)), ("max_tokens", "1.5")),
    Case("max_tokens a bool", create_from_file(with_params(max_tokens=True)), ("max_tokens", "True")),
    Case(
        "stream: true",
        create_from_file(with_params(stream=True)),
        ("line 2", "params.stream must be false", "a batch cannot stream; remove it"),
    ),
    Case(
        "messages missing",
        create_from_file(without_param("messages")),
        ("params.messages is missing",),
    ),
    Case(
        "messages empty",
        create_from_file(with_params(messages=[])),
        ("params.messages must be a non-empty list",),
    ),
    Case(
        "messages a string",
        create_from_file(with_params(messages="hi")),
        ("params.messages must be a non-empty list",),
    ),
    Case(
        "bad role",
        create_from_file(with_params(messages=[{"role": "tool", "content": "x"}])),
        ("params.messages.0.role",),
    ),
    Case(
        "content a number",
        create_from_file(with_params(messages=[{"role": "user", "content": 7}])),
        ("params.messages.0.content",),
    ),
    # -- inputs that used to get through (issue 12): each names line or index, custom_id and the fix --
    Case(
        "UTF-8 byte order mark",
        create_from_file(b"\xef\xbb\xbf" + OK + b"\n"),
        ("line 1", "'ok-1'", "byte order mark", "save it as UTF-8 without BOM"),
    ),
    Case(
        "custom_id with a trailing newline",
        create_from_file(OK + b"\n" + line(ask("abc\n"))),
        ("line 2", "custom_id 'abc\\n' is invalid", "use 1 to 64 letters"),
    ),
    Case(
        "custom_id key twice",
        create_from_file(OK + b"\n" + raw_request('"custom_id":"bad id!","custom_id":"okid"', "")),
        ("line 2", "'okid'", "'custom_id' twice in one object", "keep one"),
    ),
    Case(
        "max_tokens key twice",
        create_from_file(OK + b"\n" + raw_request('"custom_id":"twice"', '"max_tokens":0,')),
        ("line 2", "'twice'", "'max_tokens' twice in one object", "keep one"),
    ),
    Case(
        "max_tokens 10**20",
        create_from_file(with_params(max_tokens=10**20)),
        ("line 2", "'bad-1'", "params.max_tokens must be an integer from 1 to 1,000,000"),
    ),
    Case(
        "very deep nesting in a file",
        create_from_file(
            OK + b"\n" + raw_request('"custom_id":"deep"', '"metadata":' + "[" * 3000 + "]" * 3000 + ",")
        ),
        ("line 2", "'deep'", "nested more than 500 levels deep", "flatten"),
    ),
    Case(
        "very deep nesting inline",
        create_inline([ask("a"), ask("deep", metadata={"user_id": nested(600)})]),
        ("requests[1]", "'deep'", "params.metadata.user_id", "nested more than 500 levels deep"),
    ),
    Case(
        "inline datetime",
        create_inline([ask("when", metadata={"user_id": datetime(2026, 1, 1)})]),
        ("requests[0]", "'when'", "params.metadata.user_id is a datetime", "ISO 8601 string"),
    ),
    Case(
        "inline set",
        create_inline([ask("a"), ask("tags", stop_sequences={"END"})]),
        ("requests[1]", "'tags'", "params.stop_sequences is a set", "a set to a list"),
    ),
    Case(
        "inline bytes",
        create_inline([ask("raw", "x", system=b"be brief")]),
        ("requests[0]", "'raw'", "params.system is a bytes", "convert it"),
    ),
    Case(
        "inline NaN",
        create_inline([ask("nan", temperature=float("nan"))]),
        ("requests[0]", "'nan'", "params.temperature is nan", "use a finite one"),
    ),
    Case(
        "inline infinity",
        create_inline([ask("inf", top_p=float("inf"))]),
        ("requests[0]", "'inf'", "params.top_p is inf", "use a finite one"),
    ),
    Case(
        "inline lone surrogate",
        create_inline([ask("sur", "half \ud83d")]),
        (
            "requests[0]",
            "'sur'",
            "params.messages.0.content holds a lone surrogate",
            "fix the text's encoding",
        ),
    ),
    Case(
        "inline key that is not a string",
        create_inline([ask("key", metadata={1: "x"})]),
        ("requests[0]", "'key'", "params.metadata has the key 1", "JSON keys are strings"),
    ),
    Case(
        "1e400 in a file",
        create_from_file(OK + b"\n" + raw_request('"custom_id":"huge"', '"temperature":1e400,')),
        ("line 2", "'huge'", "params.temperature is inf", "use a finite one"),
    ),
    Case(
        "lone surrogate escape in a file",
        create_from_file(line(ask("sur", "half \\ud83d")).replace(b"\\\\ud83d", b"\\ud83d")),
        ("line 1", "'sur'", "params.messages.0.content holds a lone surrogate", "fix the text's encoding"),
    ),
    Case(
        "misspelt temperature",
        create_from_file(with_params(temprature=0.5)),
        ("line 2", "'bad-1'", "params.temprature is not a known field", "did you mean 'temperature'?"),
    ),
    Case(
        "temperature a word",
        create_from_file(with_params(temperature="hot")),
        ("line 2", "'bad-1'", "params.temperature must be a number from 0 to 1, got 'hot'"),
    ),
    Case(
        "temperature 5",
        create_from_file(with_params(temperature=5)),
        ("line 2", "'bad-1'", "params.temperature must be a number from 0 to 1, got 5"),
    ),
    Case(
        "tools not a list",
        create_from_file(with_params(tools={"name": "calc"})),
        ("line 2", "'bad-1'", "params.tools must be a list of objects with 'name', got dict"),
    ),
    Case(
        "tool without a name",
        create_from_file(with_params(tools=[{"input_schema": {"type": "object"}}])),
        ("line 2", "'bad-1'", "params.tools.0.name is missing", "it must be a string"),
    ),
    Case(
        "top_k negative",
        create_from_file(with_params(top_k=-1)),
        ("line 2", "'bad-1'", "params.top_k must be an integer >= 0, got -1"),
    ),
    Case(
        "top_p over 1",
        create_from_file(with_params(top_p=1.5)),
        ("line 2", "'bad-1'", "params.top_p must be a number from 0 to 1, got 1.5"),
    ),
    Case(
        "stop_sequences a string",
        create_from_file(with_params(stop_sequences="END")),
        ("line 2", "'bad-1'", "params.stop_sequences must be a list of strings, got 'END'"),
    ),
    Case(
        "system a number",
        create_from_file(with_params(system=3)),
        ("line 2", "'bad-1'", "params.system must be a string or a list of objects", "got 3"),
    ),
    Case(
        "tool_choice of an unknown type",
        create_from_file(with_params(tool_choice={"type": "sometimes"})),
        ("line 2", "'bad-1'", "params.tool_choice.type must be one of 'auto', 'any', 'tool', 'none'"),
    ),
    Case(
        "thinking budget under 1,024",
        create_from_file(with_params(thinking={"type": "enabled", "budget_tokens": 100})),
        ("line 2", "'bad-1'", "params.thinking.budget_tokens must be an integer >= 1,024, got 100"),
    ),
    Case(
        "service_tier batch",
        create_from_file(with_params(service_tier="batch")),
        ("line 2", "'bad-1'", "params.service_tier must be one of 'auto', 'standard_only'"),
    ),
    Case(
        "metadata with a misspelt key",
        create_from_file(with_params(metadata={"userid": "u1"})),
        ("line 2", "'bad-1'", "params.metadata.userid is not a known field", "did you mean 'user_id'?"),
    ),
    Case(
        "content block without a type",
        create_from_file(with_params(messages=[{"role": "user", "content": [{"text": "hi"}]}])),
        ("line 2", "'bad-1'", "params.messages.0.content.0.type is missing", "it must be a string"),
    ),
    Case(
        "cache_control of an unknown type",
        create_from_file(
            with_params(system=[{"type": "text", "text": "x", "cache_control": {"type": "forever"}}])
        ),
        ("line 2", "'bad-1'", "params.system.0.cache_control.type must be 'ephemeral'"),
    ),
    Case(
        "several problems in one request, all listed",
        create_from_file(with_params(temprature=1, top_k="x", tools=3)),
        ("1 invalid request(s)", "params.temprature", "params.top_k must be", "params.tools must be"),
    ),
    # -- limits --
    Case(
        "one request of 257 MB",
        oversized_request,
        (
            "line 2",
            "'huge-1'",
            "is longer than the 255,999,473 bytes a request can have in a 256,000,000-byte batch",
        ),
    ),
    Case(
        "100,001 requests in one batch",
        hundred_thousand_and_one,
        ("max_requests_per_batch must be 1 to 100000",),
    ),
    Case(
        "max_bytes_per_batch over 256 MB",
        create_inline([ask("a")], max_bytes_per_batch=257_000_000),
        ("max_bytes_per_batch must be at most",),
    ),
    # -- paths --
    Case(
        "path does not exist",
        lambda tmp: (
            lambda: AnthropicCreateBatchOperator(
                task_id="c", requests_path=str(tmp / "missing.jsonl"), deferrable=False
            ).execute(task_context())
        ),
        ("missing.jsonl", "cannot be read", "FileNotFoundError"),
    ),
    Case(
        "path is a directory",
        lambda tmp: (
            lambda: AnthropicCreateBatchOperator(
                task_id="c", requests_path=str(tmp), deferrable=False
            ).execute(task_context())
        ),
        ("cannot be read", "Is a directory"),
    ),
    Case(
        "unknown storage scheme",
        lambda tmp: (
            lambda: AnthropicCreateBatchOperator(
                task_id="c", requests_path="nosuch://bucket/r.jsonl", deferrable=False
            ).execute(task_context())
        ),
        ("nosuch://bucket/r.jsonl", "cannot be read"),
    ),
    Case(
        "templated path renders to nothing",
        rendered("{{ params.requests_path }}", {"requests_path": ""}),
        ("requests_path rendered to ''",),
    ),
    Case(
        "templated path renders to blanks",
        rendered("{{ params.requests_path }}  ", {"requests_path": " "}),
        ("requests_path rendered to",),
    ),
    # -- operator arguments --
    Case(
        "both requests and requests_path",
        construct(lambda: AnthropicCreateBatchOperator(task_id="c", requests=[ask("a")], requests_path="/x")),
        ("exactly one of requests",),
        ValueError,
    ),
    Case(
        "neither requests nor requests_path",
        construct(lambda: AnthropicCreateBatchOperator(task_id="c")),
        ("exactly one of requests",),
        ValueError,
    ),
    Case(
        "requests is a string (a rendered XCom)",
        create_inline("[{'custom_id': 'a'}]"),
        ("requests must be a list", "str"),
    ),
    Case("requests is one request, not a list", create_inline(ask("a")), ("requests must be a list", "dict")),
    Case(
        "inline request without params",
        create_inline([ask("a"), {"custom_id": "b"}]),
        ("requests[1]", "params is missing"),
    ),
    Case("model= is blank", create_inline([ask("a")], model=" "), ("model must be a model name",)),
    Case(
        "poll_interval zero",
        construct(lambda: AnthropicCreateBatchOperator(task_id="c", requests=[ask("a")], poll_interval=0)),
        ("poll_interval and timeout must be positive",),
        ValueError,
    ),
    Case(
        "max_requests_per_batch zero",
        create_inline([ask("a")], max_requests_per_batch=0),
        ("max_requests_per_batch must be 1 to 100000",),
    ),
    Case(
        "count tokens: max_concurrency 0",
        construct(lambda: AnthropicCountTokensOperator(task_id="t", requests=[ask("a")], max_concurrency=0)),
        ("max_concurrency must be at least 1",),
        ValueError,
    ),
    Case(
        "count tokens: bad request",
        lambda tmp: (
            lambda: AnthropicCountTokensOperator(task_id="t", requests=[ask("a", stream=True)]).execute(
                task_context()
            )
        ),
        ("params.stream must be false",),
    ),
    Case(
        "results: no batch id (empty template)",
        lambda tmp: transfer(tmp, batch_id=""),
        ("batch_id", "is not a batch id"),
        ValueError,
    ),
    Case(
        "results: empty list of ids",
        lambda tmp: transfer(tmp, batch_id=[]),
        ("no batch id given",),
        ValueError,
    ),
    Case(
        "results: a path as batch id",
        lambda tmp: transfer(tmp, batch_id="../../etc/passwd"),
        ("is not a batch id",),
        ValueError,
    ),
    Case(
        "results: a manifest without batch_ids",
        lambda tmp: transfer(tmp, batch_id={"ids": ["x"]}),
        ("'batch_ids' key",),
        ValueError,
    ),
    Case(
        "results: compression zip",
        construct(
            lambda: AnthropicBatchResultsToObjectStorageOperator(
                task_id="r", batch_id="msgbatch_1", destination="/tmp/x", compression="zip"
            )
        ),
        ("compression must be None or 'gzip'",),
        ValueError,
    ),
    Case(
        "results: negative download_retries",
        construct(
            lambda: AnthropicBatchResultsToObjectStorageOperator(
                task_id="r", batch_id="msgbatch_1", destination="/tmp/x", download_retries=-1
            )
        ),
        ("download_retries must not be negative",),
        ValueError,
    ),
    Case(
        "cancel: batch id is a number",
        lambda tmp: lambda: AnthropicCancelBatchOperator(task_id="c", batch_id=[42]).execute(task_context()),
        ("42", "is not a batch id"),
        ValueError,
    ),
    Case(
        "delete: blank batch id",
        lambda tmp: (
            lambda: AnthropicDeleteBatchOperator(task_id="d", batch_id=["  "]).execute(task_context())
        ),
        ("is not a batch id",),
        ValueError,
    ),
    Case(
        "sensor: no batch id",
        lambda tmp: lambda: AnthropicBatchSensor(task_id="s", batch_id=None).poke(task_context()),
        ("batch_id", "expected a batch id"),
        ValueError,
    ),
]


@pytest.fixture(scope="module")
def corpus_emulator() -> Iterator[Emulator]:
    emulator = start_emulator(processing_seconds=0)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(autouse=True)
def _connection(corpus_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", connection(corpus_emulator))


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_with_a_clear_message(
    case: Case, tmp_path: Path, corpus_emulator: Emulator
) -> None:
    run = case.build(tmp_path)
    created = batches_created(corpus_emulator)
    with pytest.raises(case.error) as raised:
        run()
    assert batches_created(corpus_emulator) == created, f"{case.name}: a batch was created"
    message = str(raised.value)
    missing = [words for words in case.expect if words.lower() not in message.lower()]
    assert not missing, f"{case.name}: the message does not say {missing}:\n{message}"
    assert not leaks_in_text(message)
    FIGURES["inputs_rejected"] += 1


def test_a_100001_request_file_is_split_not_sent_whole(tmp_path: Path) -> None:
    """Without a max_requests_per_batch override, 100,001 requests are split in two batches (planned
    offline), never sent as one body the API would refuse; each batch keeps a slot for its proof
    request, so the first holds 99,999."""
    path = tmp_path / "big.jsonl"
    template = json.dumps(ask("ID", "hi")).encode()
    with path.open("wb") as out:
        out.writelines(template.replace(b"ID", f"r{i}".encode()) + b"\n" for i in range(100_001))
    job = prepare_job(RequestSource(requests_path=str(path)))
    assert [part.count for part in job.slices] == [MAX_REQUESTS_PER_BATCH - 1, 2]


def test_connection_problems_are_named_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    operator = AnthropicCreateBatchOperator(task_id="c", requests=[ask("a")], deferrable=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps({"conn_type": "http", "password": SECRET_KEY})
    )
    with pytest.raises(ConnectionConfigError, match="has type 'http'") as raised:
        operator.execute(task_context())
    assert not leaks_in_text(str(raised.value))
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
        json.dumps({"conn_type": "anthropic_batches", "password": SECRET_KEY, "extra": {"timeout": "soon"}}),
    )
    operator = AnthropicCreateBatchOperator(task_id="c", requests=[ask("a")], deferrable=False)
    with pytest.raises(ConnectionConfigError, match="extra 'timeout' must be a float") as raised:
        operator.execute(task_context())
    assert not leaks_in_text(str(raised.value))
    FIGURES["inputs_rejected"] += 2


def test_no_create_call_reached_the_api(corpus_emulator: Emulator) -> None:
    """Runs last in this module: whatever the corpus did, nothing was created, nor even attempted."""
    stats = corpus_emulator.admin.stats()
    assert stats["batches_created"] == {}
    assert "POST /v1/messages/batches" not in stats["calls"], stats["calls"]
    assert stats["requests_received"] == 0
