"""The official anthropic SDK, changed only by its base URL, works against the emulator on every endpoint."""

from __future__ import annotations

import anthropic
import pytest

from airflow_provider_batches.emulator import Emulator
from tests.emulator.helpers import MODEL, batch_request, sdk_client

BATCH_BETA = "message-batches-2024-09-24"


def test_messages_create_returns_deterministic_message(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi there"}]
    )
    second = client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi there"}]
    )
    assert first.id.startswith("msg_")
    assert first.model == MODEL
    assert first.role == "assistant"
    assert first.stop_reason == "end_turn"
    assert first.content[0].type == "text"
    assert "Hi there" in first.content[0].text
    assert first.usage.service_tier == "standard"
    assert first.model_dump() == second.model_dump()


def test_messages_create_stops_at_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x" * 100}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_count_tokens_matches_usage_of_answer(client: anthropic.Anthropic) -> None:
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "count me, please"}]
    counted = client.messages.count_tokens(model=MODEL, messages=messages)
    answered = client.messages.create(model=MODEL, max_tokens=100, messages=messages)
    assert counted.input_tokens == answered.usage.input_tokens > 0


def test_batch_create_retrieve_and_results(client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(
        requests=[batch_request(f"req-{i}", f"prompt {i}") for i in range(3)]
    )
    assert created.id.startswith("msgbatch_")
    assert len(created.id) == len("msgbatch_") + 24
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    batch = client.messages.batches.retrieve(created.id)
    assert batch.processing_status == "ended"
    assert batch.request_counts.succeeded == 3
    results = {line.custom_id: line.result for line in client.messages.batches.results(created.id)}
    assert set(results) == {"req-0", "req-1", "req-2"}
    result = results["req-1"]
    assert result.type == "succeeded"
    assert result.message.usage.service_tier == "batch"
    assert "prompt 1" in result.message.content[0].text  # type: ignore[union-attr]


def test_batch_list_auto_paging_visits_every_batch_newest_first(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[batch_request("only")]).id for _ in range(5)]
    listed = [batch.id for batch in client.messages.batches.list(limit=2)]
    assert listed == list(reversed(ids))


def test_batch_list_page_fields(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[batch_request("only")]).id for _ in range(3)]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]]
    assert page.first_id == ids[2]
    assert page.last_id == ids[1]
    assert page.has_more is True
    previous = client.messages.batches.list(before_id=ids[0], limit=1)
    assert [b.id for b in previous.data] == [ids[1]]
    assert previous.has_more is True


def test_batch_list_empty_page_has_null_ids(client: anthropic.Anthropic) -> None:
    page = client.messages.batches.list()
    assert page.data == []
    assert page.first_id is None
    assert page.last_id is None
    assert page.has_more is False


def test_batch_cancel_then_delete(client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(requests=[batch_request("a"), batch_request("b")])
    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 2
    deleted = client.messages.batches.delete(created.id)
    assert deleted.id == created.id
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


def test_beta_batch_endpoints(emulator: Emulator) -> None:
    client = sdk_client(emulator)
    betas = [BATCH_BETA]
    created = client.beta.messages.batches.create(requests=[batch_request("beta-1")], betas=betas)
    assert client.beta.messages.batches.retrieve(created.id, betas=betas).processing_status == "ended"
    assert [b.id for b in client.beta.messages.batches.list(betas=betas)] == [created.id]
    lines = list(client.beta.messages.batches.results(created.id, betas=betas))
    assert [line.custom_id for line in lines] == ["beta-1"]
    client.beta.messages.batches.delete(created.id, betas=betas)
    second = client.beta.messages.batches.create(requests=[batch_request("beta-2")], betas=betas)
    assert client.beta.messages.batches.cancel(second.id, betas=betas).processing_status == "canceling"
    assert emulator.admin.stats()["betas_seen"][BATCH_BETA] >= 6


def test_beta_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.beta.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], betas=["token-counting-2024-11-01"]
    )
    assert counted.input_tokens > 0


def test_authentication_error(emulator: Emulator) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk_client(emulator, api_key="sk-ant-wrong").messages.batches.list()
    assert caught.value.status_code == 401
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_emu_")
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": caught.value.request_id,
    }


def test_bad_request_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "hi"}])
    assert "max_tokens" in caught.value.message


def test_not_found_error_for_unknown_model(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="gpt-4", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert "model: gpt-4" in caught.value.message


def test_not_found_error_for_unknown_batch(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve("msgbatch_doesnotexist000000000000")
    assert "no batch with id 'msgbatch_doesnotexist000000000000'" in caught.value.message


def test_rate_limit_error(emulator: Emulator, client: anthropic.Anthropic) -> None:
    emulator.admin.set_config(next_faults=["429"])
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.list()
    assert caught.value.response.headers["retry-after"] == "1"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("fault", "sdk_error", "error_type"),
    [
        ("500", anthropic.InternalServerError, "api_error"),
        ("529", anthropic.APIStatusError, "overloaded_error"),
        ("504", anthropic.APIStatusError, "timeout_error"),
    ],
)
def test_server_errors_carry_their_status_type_and_should_retry(
    emulator: Emulator, client: anthropic.Anthropic, fault: str, sdk_error: type, error_type: str
) -> None:
    emulator.admin.set_config(next_faults=[fault])
    with pytest.raises(sdk_error) as caught:
        client.messages.batches.list()
    assert caught.value.status_code == int(fault)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == error_type
    assert caught.value.response.headers["x-should-retry"] == "true"


def test_sdk_retries_injected_529_and_succeeds(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["529", "529"], retry_after_ms=1)
    client = anthropic.Anthropic(api_key=emulator.api_key, base_url=emulator.base_url, max_retries=2)
    assert client.messages.batches.list().data == []
    assert emulator.admin.stats()["calls"]["GET /v1/messages/batches"] == {"529": 2, "200": 1}


# -- SDK 2.17: the Models API, dropped results streams, error codes ----------------------------------


def test_models_retrieve_parses_as_the_sdks_model_info(client: anthropic.Anthropic) -> None:
    model = client.models.retrieve("claude-sonnet-4-6")

    assert isinstance(model, anthropic.types.ModelInfo)
    assert (model.id, model.type, model.lifecycle, model.line) == (
        "claude-sonnet-4-6",
        "model",
        "active",
        "sonnet",
    )
    assert model.max_tokens == 128_000
    assert model.max_input_tokens == 1_000_000
    assert model.capabilities is not None
    assert model.capabilities.batch.supported
    assert model.capabilities.thinking.types.adaptive.supported


def test_a_retired_model_stays_listed_as_retired_and_requests_naming_it_fail(
    client: anthropic.Anthropic,
) -> None:
    retired = client.models.retrieve("claude-sonnet-4-5")

    assert retired.lifecycle == "retired"
    assert retired.deprecated_at is not None
    assert "claude-sonnet-4-5" in [model.id for model in client.models.list()]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )


def test_models_list_pages_through_the_whole_catalogue(client: anthropic.Anthropic) -> None:
    first = client.models.list(limit=2)

    assert len(first.data) == 2
    assert first.has_more
    assert len({model.id for model in client.models.list(limit=3)}) > 20  # auto-paging visits all


def test_an_unknown_model_is_a_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="claude-sonet-4-6"):
        client.models.retrieve("claude-sonet-4-6")


def test_a_results_stream_that_drops_raises_api_connection_error(emulator: Emulator) -> None:
    client = sdk_client(emulator)
    batch = client.messages.batches.create(requests=[batch_request(f"r{i}", "x" * 200) for i in range(20)])
    emulator.admin.set_config(next_faults=["cut"], cut_results_after_bytes=300)

    with pytest.raises(anthropic.APIConnectionError):
        list(client.messages.batches.results(batch.id))


def test_a_monthly_spend_cap_is_the_sdks_rate_limit_error_with_its_error_code(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["spend_limit"])

    with pytest.raises(anthropic.RateLimitError) as raised:
        sdk_client(emulator).messages.batches.list()

    assert raised.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in raised.value.response.headers


def test_an_organization_on_hold_is_a_bad_request_with_its_error_code(emulator: Emulator) -> None:
    emulator.admin.set_config(next_faults=["on_hold"])

    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk_client(emulator).messages.batches.list()

    assert raised.value.error_code == "organization_on_hold"


def test_an_answer_echoes_the_question_without_its_outcome_markers(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Explain TCP [emulator:succeeded] now"}],
    )

    text = message.content[0].text  # type: ignore[union-attr]
    assert text.endswith(": Explain TCP now")
    assert "[emulator:" not in text
