"""Bad input: each case gets the spec's status and an error message that names the field."""

from __future__ import annotations

import json
from typing import Any, get_args

import httpx
import pytest

from airflow_provider_batches.emulator import Emulator, EmulatorConfig
from airflow_provider_batches.emulator.cli import build_parser, config_from_args
from airflow_provider_batches.emulator.config import DEFAULT_MODELS
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import MODEL, VERSION_HEADERS, api_headers, batch_request, sdk_client


def _create(emu: Emulator, body: Any) -> httpx.Response:
    return httpx.post(f"{emu.base_url}/v1/messages/batches", json=body, headers=api_headers(emu))


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["request_id"] == response.headers["request-id"]
    message: str = body["error"]["message"]
    return message


def test_missing_api_key_is_401(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.base_url}/v1/messages/batches", headers=VERSION_HEADERS)
    assert "x-api-key" in _error(response, 401)
    assert response.json()["error"]["type"] == "authentication_error"


def test_missing_anthropic_version_is_400(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.base_url}/v1/messages/batches", headers={"x-api-key": emulator.api_key})
    assert "anthropic-version" in _error(response, 400)


def test_every_answer_carries_a_request_id(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.base_url}/v1/messages/batches", headers=api_headers(emulator))
    assert response.headers["request-id"].startswith("req_emu_")


def test_beta_query_and_repeated_beta_headers_are_accepted(emulator: Emulator) -> None:
    headers = [*api_headers(emulator).items(), ("anthropic-beta", "one,two"), ("anthropic-beta", "three")]
    response = httpx.get(f"{emulator.base_url}/v1/messages/batches?beta=true", headers=headers)
    assert response.status_code == 200
    assert set(emulator.admin.stats()["betas_seen"]) == {"one", "two", "three"}


def test_malformed_json_is_400(emulator: Emulator) -> None:
    response = httpx.post(
        f"{emulator.base_url}/v1/messages/batches",
        content=b'{"requests": [{"custom_id": "a",',
        headers=api_headers(emulator, **{"content-type": "application/json"}),
    )
    assert "invalid JSON" in _error(response, 400)


def test_wrong_content_type_is_400(emulator: Emulator) -> None:
    response = httpx.post(
        f"{emulator.base_url}/v1/messages/batches",
        content=json.dumps({"requests": [batch_request("a")]}),
        headers=api_headers(emulator, **{"content-type": "text/plain"}),
    )
    assert "content-type" in _error(response, 400)


def test_oversize_batch_body_is_413(make_emulator: EmulatorFactory) -> None:
    with make_emulator(max_batch_body_bytes=1000) as emu:
        response = _create(emu, {"requests": [batch_request(f"r{i}") for i in range(20)]})
        assert "limit is 1000 bytes" in _error(response, 413)
        assert response.json()["error"]["type"] == "request_too_large"


def test_oversize_message_body_is_413(make_emulator: EmulatorFactory) -> None:
    with make_emulator(max_message_body_bytes=100) as emu:
        body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 200}]}
        response = httpx.post(f"{emu.base_url}/v1/messages", json=body, headers=api_headers(emu))
        assert "the limit is 100 bytes" in _error(response, 413)


def test_zero_requests_is_400(emulator: Emulator) -> None:
    assert _error(_create(emulator, {"requests": []}), 400).startswith(
        "requests: List should have at least 1"
    )


def test_too_many_requests_is_400(make_emulator: EmulatorFactory) -> None:
    with make_emulator(max_batch_requests=3) as emu:
        response = _create(emu, {"requests": [batch_request(f"r{i}") for i in range(4)]})
        assert _error(response, 400).startswith("requests: List should have at most 3 items")


def test_100001_requests_is_400(emulator: Emulator) -> None:
    params = '{"model":"claude-emulator-test","max_tokens":1,"messages":[{"role":"user","content":"x"}]}'
    template = '{"custom_id":"r%d","params":' + params + "}"
    body = '{"requests":[' + ",".join(template % i for i in range(100_001)) + "]}"
    response = httpx.post(
        f"{emulator.base_url}/v1/messages/batches",
        content=body.encode(),
        headers=api_headers(emulator, **{"content-type": "application/json"}),
        timeout=60,
    )
    assert _error(response, 400).startswith("requests: List should have at most 100000 items")


def test_duplicate_custom_id_is_400_and_names_both_positions(emulator: Emulator) -> None:
    response = _create(emulator, {"requests": [batch_request("x"), batch_request("y"), batch_request("x")]})
    assert _error(response, 400) == "requests.2.custom_id: duplicate custom_id 'x' (first seen at requests.0)"


def test_bad_custom_id_characters_are_400(emulator: Emulator) -> None:
    message = _error(_create(emulator, {"requests": [batch_request("no spaces")]}), 400)
    assert message == "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"


def test_too_long_custom_id_is_400(emulator: Emulator) -> None:
    message = _error(_create(emulator, {"requests": [batch_request("a" * 65)]}), 400)
    assert message == "requests.0.custom_id: String should have at most 64 characters"


def test_stream_true_in_batch_is_400(emulator: Emulator) -> None:
    message = _error(_create(emulator, {"requests": [batch_request("a", stream=True)]}), 400)
    assert message.startswith("requests.0.params.stream:")


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
def test_missing_required_param_is_400(emulator: Emulator, missing: str) -> None:
    request = batch_request("a")
    del request["params"][missing]
    assert (
        _error(_create(emulator, {"requests": [request]}), 400)
        == f"requests.0.params.{missing}: Field required"
    )


def test_missing_params_is_400(emulator: Emulator) -> None:
    message = _error(_create(emulator, {"requests": [{"custom_id": "a"}]}), 400)
    assert message == "requests.0.params: Field required"


def test_max_tokens_below_one_is_400(emulator: Emulator) -> None:
    message = _error(_create(emulator, {"requests": [batch_request("a", max_tokens=0)]}), 400)
    assert message == "requests.0.params.max_tokens: Input should be greater than or equal to 1"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"requests": [batch_request("a")], "extra": 1}, "extra"),
        ({"requests": [{**batch_request("a"), "note": 1}]}, "requests.0.note"),
        ({"requests": [batch_request("a", unknown_param=1)]}, "requests.0.params.unknown_param"),
    ],
)
def test_unknown_keys_are_400_with_dotted_path(emulator: Emulator, body: dict[str, Any], path: str) -> None:
    assert _error(_create(emulator, body), 400) == f"{path}: Extra inputs are not permitted"


def test_optional_params_are_accepted(emulator: Emulator) -> None:
    optional: dict[str, Any] = {
        "system": "be brief",
        "metadata": {"user_id": "u1"},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "tools": [],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "disabled"},
        "service_tier": "auto",
        "container": "c1",
        "mcp_servers": [],
        "context_management": {},
    }
    assert _create(emulator, {"requests": [batch_request("a", **optional)]}).status_code == 200


def test_messages_stream_true_is_400(emulator: Emulator) -> None:
    body = {"model": MODEL, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(f"{emulator.base_url}/v1/messages", json=body, headers=api_headers(emulator))
    assert _error(response, 400).startswith("stream:")


def test_count_tokens_rejects_max_tokens(emulator: Emulator) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(
        f"{emulator.base_url}/v1/messages/count_tokens", json=body, headers=api_headers(emulator)
    )
    assert _error(response, 400) == "max_tokens: Extra inputs are not permitted"


def test_count_tokens_unknown_model_is_404(emulator: Emulator) -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(
        f"{emulator.base_url}/v1/messages/count_tokens", json=body, headers=api_headers(emulator)
    )
    assert _error(response, 404) == "model: gpt-4"


def test_list_limit_out_of_range_is_400(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.base_url}/v1/messages/batches?limit=1001", headers=api_headers(emulator))
    assert _error(response, 400).startswith("limit:")


def test_unknown_route_is_404_error_body(emulator: Emulator) -> None:
    response = httpx.get(f"{emulator.base_url}/v1/nothing", headers=api_headers(emulator))
    assert response.json()["error"]["type"] == "not_found_error"


# -- model catalogue and input the API refuses that the emulator used to take ------------------------


def _message(emu: Emulator, **params: Any) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **params}
    return httpx.post(f"{emu.base_url}/v1/messages", json=body, headers=api_headers(emu))


def test_a_model_not_in_the_catalogue_is_404_naming_it(emulator: Emulator) -> None:
    response = _message(emulator, model="claude-nonexistent-9")
    assert _error(response, 404) == "model: claude-nonexistent-9"
    assert response.json()["error"]["type"] == "not_found_error"


def test_a_batch_request_for_an_unknown_model_ends_errored_not_found(emulator: Emulator) -> None:
    client = sdk_client(emulator)
    batch = client.messages.batches.create(
        requests=[batch_request("known"), batch_request("unknown", model="claude-nonexistent-9")]
    )
    client.messages.batches.retrieve(batch.id)
    results = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
    assert results["known"].type == "succeeded"
    assert results["unknown"].type == "errored"
    assert results["unknown"].error.error.type == "not_found_error"
    assert results["unknown"].error.error.message == "model: claude-nonexistent-9"


def test_every_model_id_of_the_sdk_is_in_the_default_catalogue() -> None:
    from anthropic.types.model import Model

    sdk_ids = {value for option in get_args(Model) for value in get_args(option)}
    assert sdk_ids
    assert sdk_ids <= set(EmulatorConfig().models)


def test_users_can_extend_the_catalogue(make_emulator: EmulatorFactory) -> None:
    with make_emulator(models=[*DEFAULT_MODELS, "my-fine-tune"]) as emu:
        assert _message(emu, model="my-fine-tune").status_code == 200


def test_the_cli_adds_models_to_the_default_catalogue() -> None:
    config = config_from_args(build_parser().parse_args(["--model", "my-fine-tune", "--model", "other"]))
    assert config.models == [*DEFAULT_MODELS, "my-fine-tune", "other"]


def test_a_lone_surrogate_in_a_message_is_400_not_500(emulator: Emulator) -> None:
    body = b'{"model":"%s","max_tokens":5,"messages":[{"role":"user","content":"x\\ud800"}]}' % MODEL.encode()
    response = httpx.post(
        f"{emulator.base_url}/v1/messages",
        content=body,
        headers=api_headers(emulator, **{"content-type": "application/json"}),
    )
    assert _error(response, 400) == "body: invalid JSON: lone surrogate '\\ud800' in a string"


def test_a_lone_surrogate_in_a_batch_is_400_naming_the_request(emulator: Emulator) -> None:
    good = json.dumps(batch_request("a")).encode()
    bad = json.dumps(batch_request("b")).replace("hello", "\\udc00").encode()
    response = httpx.post(
        f"{emulator.base_url}/v1/messages/batches",
        content=b'{"requests":[' + good + b"," + bad + b"]}",
        headers=api_headers(emulator, **{"content-type": "application/json"}),
    )
    assert _error(response, 400) == "body: invalid JSON: lone surrogate '\\udc00' in a string of requests.1"
    assert emulator.admin.stats()["batches_created"] == {}


def test_a_custom_id_with_a_trailing_newline_is_400(emulator: Emulator) -> None:
    message = _error(_create(emulator, {"requests": [batch_request("abc\n")]}), 400)
    assert message == "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"
