"""An error the API still finds names the file line and custom_id, not the index in the batch body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_batches.emulator import Emulator
from airflow_provider_batches.errors import InvalidRequestError
from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator
from tests.operators.support import batches_created, request, task_context


def test_an_api_refusal_of_requests_n_names_the_file_line_and_custom_id(
    emulator: Emulator, tmp_path: Path
) -> None:
    # A beta field passes local validation (the API takes it with its beta header); without that
    # header the API (and the emulator) refuses the body, naming "requests.<index in the body>".
    lines = [request("a"), request("b"), None, request("c", thread={"id": "t1"})]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join((json.dumps(item) if item else "") + "\n" for item in lines))
    operator = AnthropicCreateBatchOperator(task_id="create", requests_path=str(path), deferrable=False)
    with pytest.raises(InvalidRequestError) as raised:
        operator.execute(task_context())
    message = str(raised.value)
    assert "line 4 (custom_id 'c'), params.thread: Extra inputs are not permitted" in message
    assert "the API said: requests.2.params.thread" in message
    assert batches_created(emulator) == 0
