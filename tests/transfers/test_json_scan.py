"""The streaming JSON check behind big result lines agrees with a full JSON parser, whatever the
piece borders, and keeps only short values."""

from __future__ import annotations

import json
import random

import pytest

from airflow_provider_batches.transfers.json_scan import MAX_KEPT_BYTES, TOO_LONG, JsonScanError, JsonScanner

PATHS = [("custom_id",), ("result", "type"), ("result", "message", "usage", "input_tokens")]
LINE = json.dumps(
    {
        "custom_id": "a-1",
        "result": {
            "type": "succeeded",
            "message": {
                "content": [{"type": "text", "text": 'h\u00e9llo "x" \n \u2028 \\ \t end'}],
                "usage": {"input_tokens": 3, "nested": [1, 2.5e3, -0.1, True, None, {"input_tokens": 9}]},
            },
        },
    },
    ensure_ascii=False,
).encode()


def scan(data: bytes, step: int) -> dict[tuple[str, ...], object]:
    scanner = JsonScanner(PATHS)
    for start in range(0, len(data), step):
        scanner.feed(data[start : start + step])
    return scanner.end()


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64, len(LINE)])
def test_values_are_kept_whatever_the_piece_borders(step: int) -> None:
    assert scan(LINE, step) == {
        ("custom_id",): "a-1",
        ("result", "type"): "succeeded",
        ("result", "message", "usage", "input_tokens"): 3,
    }


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"custom_id":"a"', "cut off"),
        (b'{"a":1,}', "unexpected '}'"),
        (b'{"a" 1}', "unexpected '1'"),
        (b"[1]", "must be an object"),
        (b'{"a":tru}', "is not a JSON value"),
        (b'{"a":"\x01"}', "control character"),
        (b'{"a":"\\q"}', "invalid escape"),
        (b'{"a":"\\u12G4"}', "invalid \\u escape"),
        (b'{"a":01}', "is not a JSON value"),
        (b'{"a":"\xff"}', "not UTF-8"),
        (b'{"custom_id":"a","custom_id":"b"}', "custom_id appears twice"),
        (b"{} x", "unexpected 'x'"),
        (b"[" * 5 + b"]" * 5, "must be an object"),
        (b'{"a":' + b"[" * 1001, "nested more than 1000"),
        (b'{"a":' + b"1" * 2000 + b"}", "longer than"),
    ],
)
def test_what_is_not_one_json_object_is_refused(data: bytes, words: str) -> None:
    with pytest.raises(JsonScanError, match=words.replace("\\", "\\\\").replace("(", r"\(")):
        scan(data, 3)


def test_it_agrees_with_a_full_parser_on_damaged_lines() -> None:
    rng = random.Random(22)
    for number in range(3000):
        obj = {
            "custom_id": f"c{number}",
            "result": {"type": "succeeded", "x": [rng.random(), 's\\"\u00e9', {}]},
        }
        data = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()
        at = rng.randrange(len(data))
        damaged = (
            data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :] if rng.random() < 0.7 else data[:at]
        )
        try:
            expected = isinstance(json.loads(damaged), dict)
        except ValueError:
            expected = False
        try:
            scan(damaged, rng.randrange(1, 20))
            accepted = True
        except JsonScanError:
            accepted = False
        assert accepted == expected, damaged


def test_a_long_value_is_marked_too_long_not_kept() -> None:
    data = json.dumps({"custom_id": "x" * (10 * MAX_KEPT_BYTES), "result": {"type": "succeeded"}}).encode()

    assert scan(data, 100)[("custom_id",)] is TOO_LONG
