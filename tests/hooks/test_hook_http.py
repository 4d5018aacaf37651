"""AnthropicHook's exact HTTP behaviour, with answers scripted at the transport (httpx.MockTransport)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from airflow_provider_batches import errors
from airflow_provider_batches.bodies import BatchBody
from airflow_provider_batches.hooks.anthropic import CLIENT_LIMITS, AnthropicHook
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.policy import DEFAULT_MAX_POLL_INTERVAL
from tests.fakes import API_KEY, BASE_URL, Recorder, batch_json, error, listing_json
from tests.hooks.conftest import set_connection


def hook_for(recorder: Recorder, **kwargs: object) -> AnthropicHook:
    return AnthropicHook(transport=recorder.transport(), **kwargs)  # type: ignore[arg-type]


def async_hook_for(recorder: Recorder) -> AnthropicHook:
    return AnthropicHook(async_transport=httpx.MockTransport(recorder))


# -- request building -----------------------------------------------------------------------------


def test_every_call_sends_the_key_and_version_headers() -> None:
    recorder = Recorder(httpx.Response(200, json=batch_json()))
    hook_for(recorder).get_batch("msgbatch_1")
    request = recorder.requests[0]
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.url == f"{BASE_URL}/v1/messages/batches/msgbatch_1"


def test_betas_send_the_beta_header_and_query_flag() -> None:
    recorder = Recorder(httpx.Response(200, json=batch_json()))
    hook_for(recorder).get_batch("msgbatch_1", betas=["message-batches-2024-09-24", "other-beta"])
    request = recorder.requests[0]
    assert request.headers["anthropic-beta"] == "message-batches-2024-09-24,other-beta"
    assert request.url.params["beta"] == "true"


def test_calls_without_betas_send_no_beta_flag() -> None:
    recorder = Recorder(httpx.Response(200, json=batch_json()))
    hook_for(recorder).get_batch("msgbatch_1")
    assert "anthropic-beta" not in recorder.requests[0].headers
    assert "beta" not in recorder.requests[0].url.params


def test_connection_default_betas_are_merged_with_call_betas(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={"betas": "beta-a, beta-b"})
    recorder = Recorder(httpx.Response(200, json=batch_json()))
    hook_for(recorder).get_batch("msgbatch_1", betas=["beta-b", "beta-c"])
    assert recorder.requests[0].headers["anthropic-beta"] == "beta-a,beta-b,beta-c"


def test_count_tokens_drops_max_tokens_and_stream() -> None:
    recorder = Recorder(httpx.Response(200, json={"input_tokens": 17}))
    params = {
        "model": "claude-emulator-test",
        "max_tokens": 10,
        "stream": False,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert hook_for(recorder).count_tokens(params) == 17
    assert json.loads(recorder.requests[0].content) == {
        "model": "claude-emulator-test",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_create_batch_streams_a_body_factory() -> None:
    recorder = Recorder(_listing(), httpx.Response(200, json=batch_json(total=1)))
    body = BatchBody(lambda: iter([b'{"requests": [', b'{"custom_id": "a", "params": {}}', b"]}"]), 1)
    batch = hook_for(recorder).create_batch(body)
    assert batch.id == "msgbatch_1"
    assert json.loads(recorder.requests[1].content) == {"requests": [{"custom_id": "a", "params": {}}]}
    assert recorder.requests[1].headers["content-type"] == "application/json"


def test_a_batch_id_with_a_slash_is_refused_before_any_call() -> None:
    recorder = Recorder(httpx.Response(200, json=batch_json()))
    with pytest.raises(ValueError, match="is not a batch id"):
        hook_for(recorder).get_batch("../other")
    assert recorder.requests == []


# -- retries (the policy itself: tests/test_retry_policy.py, stepping the plans) ------------------


def test_the_connection_sets_the_retry_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={"max_retries": 4, "max_retry_wait": 25})
    settings = AnthropicHook().get_settings()
    assert (settings.max_retries, settings.max_retry_wait) == (4, 25.0)


def test_the_hook_waits_and_retries_as_its_plan_says() -> None:
    recorder = Recorder(
        error(529, "overloaded_error", **{"retry-after-ms": "1"}), httpx.Response(200, json=batch_json())
    )
    assert hook_for(recorder).get_batch("msgbatch_1").id == "msgbatch_1"
    assert len(recorder.requests) == 2


# -- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (400, "invalid_request_error", errors.InvalidRequestError),
        (401, "authentication_error", errors.AuthenticationError),
        (402, "billing_error", errors.BillingError),
        (403, "permission_error", errors.PermissionDeniedError),
        (404, "not_found_error", errors.NotFoundError),
        (409, "conflict_error", errors.ConflictError),
        (413, "request_too_large", errors.RequestTooLargeError),
        (429, "rate_limit_error", errors.RateLimitError),
        (500, "api_error", errors.InternalServerError),
        (504, "timeout_error", errors.GatewayTimeoutError),
        (529, "overloaded_error", errors.OverloadedError),
    ],
)
def test_each_error_type_maps_to_its_class(
    status: int, error_type: str, cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, extra={"max_retries": 0})
    with pytest.raises(cls) as raised:
        hook_for(Recorder(error(status, error_type, "the message"))).get_batch("msgbatch_1")
    assert (raised.value.status_code, raised.value.error_type, raised.value.request_id) == (
        status,
        error_type,
        "req_test",
    )
    assert "the message" in str(raised.value)


def test_authentication_error_tells_the_user_to_check_the_key() -> None:
    with pytest.raises(errors.AuthenticationError, match="check the API key in the connection"):
        hook_for(Recorder(error(401, "authentication_error"))).get_batch("msgbatch_1")


def test_an_unknown_error_type_maps_to_the_generic_api_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={"max_retries": 0})
    with pytest.raises(errors.AnthropicAPIError) as raised:
        hook_for(Recorder(error(418, "teapot_error", "short and stout"))).get_batch("msgbatch_1")
    assert type(raised.value) is errors.AnthropicAPIError
    assert raised.value.error_type == "teapot_error"
    assert "short and stout" in str(raised.value)


def test_an_html_error_page_gives_a_readable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={"max_retries": 0})
    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    with pytest.raises(errors.AnthropicAPIError) as raised:
        hook_for(Recorder(httpx.Response(502, text=page, headers={"request-id": "req_proxy"}))).get_batch(
            "msgbatch_1"
        )
    assert "non-JSON error page: 502 Bad Gateway" in str(raised.value)
    assert raised.value.request_id == "req_proxy"
    assert raised.value.status_code == 502


# -- create without paying twice ------------------------------------------------------------------


def _listing(*batches: dict[str, object], has_more: bool = False) -> httpx.Response:
    return httpx.Response(200, json=listing_json(*batches, has_more=has_more))


def watermark() -> httpx.Response:
    """The listing a create takes first: the newest batch before it, an older one of 1 request."""
    return _listing(batch_json("msgbatch_before", total=1))


ONE_REQUEST = [{"custom_id": "a", "params": {}}]


def test_a_create_lists_the_newest_batch_before_the_paid_call() -> None:
    recorder = Recorder(watermark(), httpx.Response(200, json=batch_json(total=1)))
    hook_for(recorder).create_batch(ONE_REQUEST)
    assert [(r.method, r.url.params.get("limit")) for r in recorder.requests] == [
        ("GET", "1"),
        ("POST", None),
    ]


def test_a_create_whose_answer_was_lost_returns_the_batch_listed_since(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(),
        httpx.ReadTimeout("lost"),
        _listing(batch_json("msgbatch_mine", total=1), batch_json("msgbatch_before", total=1)),
    )
    assert hook_for(recorder).create_batch(ONE_REQUEST).id == "msgbatch_mine"
    assert [r.method for r in recorder.requests].count("POST") == 1


def test_a_batch_of_the_same_size_created_before_the_watermark_is_never_adopted(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(), httpx.ReadTimeout("lost"), _listing(batch_json("msgbatch_before", total=1))
    )
    with pytest.raises(
        errors.BatchCreateUncertainError, match="no batch of 1 requests is listed since"
    ) as raised:
        hook_for(recorder).create_batch(ONE_REQUEST)
    assert raised.value.candidate_batch_ids == []
    assert [r.method for r in recorder.requests].count("POST") == 1


def test_a_lost_create_with_two_batches_listed_since_names_both_and_adopts_neither(
    sleeps: list[float],
) -> None:
    recorder = Recorder(
        watermark(),
        httpx.RemoteProtocolError("dropped"),
        _listing(
            batch_json("msgbatch_x", total=1),
            batch_json("msgbatch_y", total=1),
            batch_json("msgbatch_before"),
        ),
    )
    with pytest.raises(errors.BatchCreateUncertainError, match="msgbatch_x, msgbatch_y") as raised:
        hook_for(recorder).create_batch(ONE_REQUEST)
    assert raised.value.candidate_batch_ids == ["msgbatch_x", "msgbatch_y"]
    assert [r.method for r in recorder.requests].count("POST") == 1


def test_a_lost_create_never_adopts_an_excluded_batch(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(),
        httpx.ReadTimeout("lost"),
        _listing(batch_json("msgbatch_sibling", total=1), batch_json("msgbatch_before", total=1)),
    )
    with pytest.raises(errors.BatchCreateUncertainError, match="no batch of 1 requests"):
        hook_for(recorder).create_batch(ONE_REQUEST, exclude=["msgbatch_sibling"])


def test_a_lost_create_ignores_batches_of_another_size(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(),
        httpx.ReadTimeout("lost"),
        _listing(
            batch_json("msgbatch_other", total=5),
            batch_json("msgbatch_mine", total=1),
            batch_json("msgbatch_before"),
        ),
    )
    assert hook_for(recorder).create_batch(ONE_REQUEST).id == "msgbatch_mine"


def test_a_listing_that_never_reaches_the_watermark_is_doubt_not_adoption(sleeps: list[float]) -> None:
    page = _listing(batch_json("msgbatch_mine", total=1), has_more=True)
    recorder = Recorder(watermark(), httpx.ReadTimeout("lost"), page)
    with pytest.raises(errors.BatchCreateUncertainError, match="cannot be told apart"):
        hook_for(recorder).create_batch(ONE_REQUEST)


def test_a_create_answered_500_is_looked_up_not_resent(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(),
        error(500, "api_error"),
        _listing(batch_json("msgbatch_mine", total=1), batch_json("msgbatch_before")),
    )
    assert hook_for(recorder).create_batch(ONE_REQUEST).id == "msgbatch_mine"
    assert [r.method for r in recorder.requests].count("POST") == 1


def test_a_create_refused_before_sending_is_retried(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(), httpx.ConnectError("refused"), httpx.Response(200, json=batch_json(total=1))
    )
    assert hook_for(recorder).create_batch(ONE_REQUEST).id == "msgbatch_1"
    assert [r.method for r in recorder.requests] == ["GET", "POST", "POST"]


def test_a_create_answered_529_is_retried(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(), error(529, "overloaded_error"), httpx.Response(200, json=batch_json(total=1))
    )
    assert hook_for(recorder).create_batch(ONE_REQUEST).id == "msgbatch_1"
    assert [r.method for r in recorder.requests] == ["GET", "POST", "POST"]


def test_a_failed_watermark_listing_sends_no_create(sleeps: list[float]) -> None:
    recorder = Recorder(error(401, "authentication_error"))
    with pytest.raises(errors.AuthenticationError):
        hook_for(recorder).create_batch(ONE_REQUEST)
    assert [r.method for r in recorder.requests] == ["GET"]


# -- pagination -----------------------------------------------------------------------------------


def test_iter_batches_follows_the_cursor_across_pages() -> None:
    pages = {
        None: (["b9", "b8"], True),
        "b8": (["b7", "b6"], True),
        "b6": (["b5", "b4"], True),
        "b4": (["b3"], False),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        ids, more = pages[request.url.params.get("after_id")]
        return httpx.Response(
            200,
            json={
                "data": [batch_json(i) for i in ids],
                "first_id": ids[0],
                "last_id": ids[-1],
                "has_more": more,
            },
        )

    recorder = Recorder(answer)
    assert [b.id for b in hook_for(recorder).iter_batches(page_size=2)] == [
        "b9",
        "b8",
        "b7",
        "b6",
        "b5",
        "b4",
        "b3",
    ]
    assert len(recorder.requests) == 4
    assert recorder.requests[0].url.params["limit"] == "2"


def test_an_empty_page_has_null_cursors() -> None:
    page = hook_for(Recorder(_listing())).list_batches(limit=5)
    assert (page.data, page.first_id, page.last_id, page.has_more) == ([], None, None, False)


# -- results --------------------------------------------------------------------------------------


def _ended(**fields: object) -> MessageBatch:
    return MessageBatch.model_validate(batch_json(status="ended", **fields))


def _line(custom_id: str, kind: str = "canceled") -> bytes:
    return json.dumps({"custom_id": custom_id, "result": {"type": kind}}).encode()


def test_results_skip_blank_lines_and_accept_crlf() -> None:
    body = _line("a") + b"\r\n\r\n" + _line("b") + b"\n\n" + _line("c")
    results = list(hook_for(Recorder(httpx.Response(200, content=body))).iter_results(_ended()))
    assert [r.custom_id for r in results] == ["a", "b", "c"]


def test_results_lines_split_across_chunks_are_joined() -> None:
    body = _line("first") + b"\n" + _line("second") + b"\n"
    stream = httpx.ByteStream(body)
    chunks = [body[:7], body[7:40], body[40:]]
    assert len(b"".join(chunks)) == len(body)

    class Chunked(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from chunks

    del stream
    results = list(hook_for(Recorder(httpx.Response(200, stream=Chunked()))).iter_results(_ended()))
    assert [r.custom_id for r in results] == ["first", "second"]


def test_raw_results_are_the_exact_bytes() -> None:
    body = _line("a") + b"\r\n" + _line("b") + b"\n"
    assert (
        b"".join(hook_for(Recorder(httpx.Response(200, content=body))).iter_results_bytes(_ended())) == body
    )


def test_results_are_fetched_from_results_url_with_the_key() -> None:
    recorder = Recorder(httpx.Response(200, content=_line("a")))
    batch = _ended(results_url=f"{BASE_URL}/custom/results/path?token=1")
    list(hook_for(recorder).iter_results(batch))
    assert str(recorder.requests[0].url) == f"{BASE_URL}/custom/results/path?token=1"
    assert recorder.requests[0].headers["x-api-key"] == API_KEY


def test_a_foreign_results_url_is_refused_without_sending_anything() -> None:
    recorder = Recorder(httpx.Response(200, content=_line("a")))
    batch = _ended(results_url="https://evil.example/v1/messages/batches/msgbatch_1/results")
    with pytest.raises(errors.ForeignResultsURLError, match="evil.example") as raised:
        list(hook_for(recorder).iter_results(batch))
    assert recorder.requests == []
    assert API_KEY not in str(raised.value)


def test_a_results_url_on_another_port_is_foreign() -> None:
    batch = _ended(results_url="http://api.test:8080/v1/messages/batches/msgbatch_1/results")
    with pytest.raises(errors.ForeignResultsURLError):
        list(hook_for(Recorder(httpx.Response(200))).iter_results(batch))


def test_results_of_a_batch_still_in_progress_are_refused() -> None:
    batch = MessageBatch.model_validate(batch_json(status="in_progress"))
    with pytest.raises(errors.BatchNotReadyError, match="in_progress"):
        list(hook_for(Recorder(httpx.Response(200))).iter_results(batch))


def test_results_of_an_archived_batch_are_refused() -> None:
    batch = _ended(archived_at="2026-12-21T10:00:00Z")
    with pytest.raises(errors.BatchNotReadyError, match="archived"):
        list(hook_for(Recorder(httpx.Response(200))).iter_results(batch))


def test_a_results_stream_that_breaks_off_raises_a_connection_error() -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield _line("a") + b"\n"
            raise httpx.RemoteProtocolError("peer closed connection")

    with pytest.raises(errors.APIConnectionError, match="broke off"):
        list(hook_for(Recorder(httpx.Response(200, stream=Broken()))).iter_results(_ended()))


# -- connection -----------------------------------------------------------------------------------


def test_vendor_anthropic_connections_work_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch,
        conn_type="anthropic",
        extra={"anthropic_client_kwargs": {"timeout": 30, "max_retries": 5}},
    )
    settings = AnthropicHook().get_settings()
    assert (settings.timeout, settings.max_retries, settings.base_url) == (30.0, 5, BASE_URL)


def test_another_connection_type_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, conn_type="http")
    with pytest.raises(errors.ConnectionConfigError, match="use type 'anthropic_batches'"):
        AnthropicHook().get_settings()


def test_the_key_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, password=None)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    assert AnthropicHook().get_settings().api_key == "sk-ant-from-env"


def test_no_key_anywhere_names_both_places_to_put_one(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, password=None)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(errors.ConnectionConfigError, match="password.*ANTHROPIC_API_KEY"):
        AnthropicHook().get_settings()


def test_a_bad_extra_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, extra={"timeout": "soon"})
    with pytest.raises(errors.ConnectionConfigError, match="'timeout' must be a float"):
        AnthropicHook().get_settings()


def test_a_bare_host_gets_https_and_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, host="gateway.internal", port=8443)
    assert AnthropicHook().get_settings().base_url == "https://gateway.internal:8443"


def test_no_host_means_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, host=None)
    assert AnthropicHook().get_settings().base_url == "https://api.anthropic.com"


def test_test_connection_reports_success_and_failure() -> None:
    assert hook_for(Recorder(_listing())).test_connection()[0] is True
    ok, message = hook_for(Recorder(error(401, "authentication_error"))).test_connection()
    assert not ok
    assert "check the API key" in message


# -- secrets --------------------------------------------------------------------------------------


def test_the_key_never_shows_in_logs_exceptions_or_reprs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, extra={"max_retries": 0})
    caplog.set_level(logging.DEBUG)
    recorder = Recorder(httpx.ConnectError(f"refused by {BASE_URL}"))
    hook = hook_for(recorder)
    with pytest.raises(errors.APIConnectionError) as raised:
        hook.get_batch("msgbatch_1")
    texts = [caplog.text, str(raised.value), repr(raised.value), repr(hook), repr(hook.get_settings())]
    assert all(API_KEY not in text for text in texts)
    assert recorder.requests[0].headers["x-api-key"] == API_KEY


def test_the_key_is_registered_with_the_secrets_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    masked: list[object] = []
    monkeypatch.setattr(
        "airflow_provider_batches.hooks.anthropic.mask_secret",
        lambda secret, name=None: masked.append(secret),
    )
    AnthropicHook().get_settings()
    assert masked == [API_KEY]


# -- async twins ----------------------------------------------------------------------------------


async def test_async_get_batch_retries_like_the_sync_one() -> None:
    recorder = Recorder(
        error(529, "overloaded_error", **{"retry-after-ms": "1"}), httpx.Response(200, json=batch_json())
    )
    hook = async_hook_for(recorder)
    assert (await hook.aget_batch("msgbatch_1")).id == "msgbatch_1"
    assert len(recorder.requests) == 2
    await hook.aclose()


async def test_async_client_errors_are_mapped_and_not_retried() -> None:
    hook = async_hook_for(Recorder(error(404, "not_found_error")))
    with pytest.raises(errors.NotFoundError):
        await hook.aget_batch("msgbatch_1")


async def test_async_lost_create_is_looked_up_not_resent(sleeps: list[float]) -> None:
    recorder = Recorder(
        watermark(),
        httpx.ReadTimeout("lost"),
        _listing(batch_json("msgbatch_mine", total=1), batch_json("msgbatch_before", total=1)),
    )
    hook = async_hook_for(recorder)
    body = BatchBody(lambda: [b'{"requests": [{"custom_id": "a", "params": {}}]}'], 1)
    assert (await hook.acreate_batch(body)).id == "msgbatch_mine"
    assert [r.method for r in recorder.requests] == ["GET", "POST", "GET"]


async def test_async_results_parse_crlf_and_blank_lines() -> None:
    body = _line("a") + b"\r\n\r\n" + _line("b", "expired")
    hook = async_hook_for(Recorder(httpx.Response(200, content=body)))
    results = [r async for r in hook.aiter_results(_ended())]
    assert [(r.custom_id, r.result.type) for r in results] == [("a", "canceled"), ("b", "expired")]


async def test_async_foreign_results_url_is_refused() -> None:
    hook = async_hook_for(Recorder(httpx.Response(200)))
    with pytest.raises(errors.ForeignResultsURLError):
        [r async for r in hook.aiter_results(_ended(results_url="https://elsewhere.test/r"))]


def test_idle_connections_outlive_the_longest_default_poll_interval() -> None:
    assert CLIENT_LIMITS.keepalive_expiry is not None
    assert CLIENT_LIMITS.keepalive_expiry > DEFAULT_MAX_POLL_INTERVAL  # the next round reuses its connection
