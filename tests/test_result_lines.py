"""A results line is read one way: one schema, one block decoder, one splitter, whatever the chunks."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_batches
from airflow_provider_batches.result_lines import (
    CONTENT_DECODER,
    LINE_PATHS,
    BlockSplitter,
    LineSplitter,
    decode_block,
    decode_good_lines,
    decode_line,
    iter_result_lines,
    line_from_paths,
    split_lines,
)
from airflow_provider_batches.transfers.json_scan import JsonScanner

PACKAGE = Path(airflow_provider_batches.__file__).parent


def succeeded(custom_id: str, **usage: Any) -> dict[str, Any]:
    message = {
        "id": f"msg_{custom_id}",
        "model": "claude-haiku-4-5",
        "content": [
            {"type": "text", "text": "hi {\n}"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 5, **usage},
    }
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def errored(custom_id: str) -> dict[str, Any]:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}, "request_id": None}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


LINES = [
    succeeded(
        "a",
        cache_creation_input_tokens=30,
        cache_creation={"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
    ),
    errored("b"),
    {"custom_id": "c", "result": {"type": "expired"}},
    succeeded("d", cache_read_input_tokens=None),
]
DATA = b"".join(json.dumps(line).encode() + b"\n" for line in LINES)


def blocks_of(chunks: list[bytes], block_bytes: int) -> list[bytes]:
    splitter = BlockSplitter(block_bytes)
    blocks = [block for chunk in chunks if (block := splitter.feed(chunk)) is not None]
    rest = splitter.flush()
    return blocks if rest is None else [*blocks, rest]


# -- the splitter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("block_bytes", [0, 1, 200, 10_000])
def test_blocks_hold_whole_lines_for_a_cut_at_every_byte(block_bytes: int) -> None:
    for cut in range(len(DATA) + 1):
        blocks = blocks_of([DATA[:cut], DATA[cut:]], block_bytes)

        assert b"".join(blocks) == DATA, cut
        assert all(block.endswith(b"\n") for block in blocks), cut


@pytest.mark.parametrize("block_bytes", [0, 300])
def test_blocks_hold_whole_lines_when_every_byte_is_a_chunk(block_bytes: int) -> None:
    blocks = blocks_of([DATA[i : i + 1] for i in range(len(DATA))], block_bytes)

    assert b"".join(blocks) == DATA
    assert [line for block in blocks for line in split_lines(block)] == DATA.split(b"\n")[:-1]


def test_a_block_is_given_once_block_bytes_are_held() -> None:
    splitter = BlockSplitter(100)
    line = b"{" + b"x" * 38 + b"}\n"  # 41 bytes

    assert [splitter.feed(line), splitter.feed(line)] == [None, None]
    assert splitter.feed(line + b"{par") == line * 3
    assert splitter.pending_bytes == 4


def test_a_last_line_without_a_newline_is_given_one() -> None:
    blocks = blocks_of([DATA[:-1]], 0)

    assert b"".join(blocks) == DATA
    assert blocks[-1] == json.dumps(LINES[-1]).encode() + b"\n"


def test_an_empty_stream_gives_no_block() -> None:
    assert blocks_of([b"", b""], 0) == []


def test_a_line_not_yet_ended_is_handed_over_whole_and_only_then() -> None:
    splitter = BlockSplitter(8)
    assert splitter.feed(b'{"long') is None
    assert splitter.feed(b"er line") is None

    assert splitter.take_partial() == b'{"longer line'
    assert splitter.pending_bytes == 0

    splitter.feed(b"{}\n{")
    with pytest.raises(RuntimeError, match="whole lines are held"):
        splitter.take_partial()


def test_lines_come_without_line_breaks_or_blank_lines() -> None:
    assert split_lines(b'{"a":1}\r\n\n  \n{"b":2}\n\r\n{"c":3}') == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_the_line_splitter_gives_each_line_once_whatever_the_chunks() -> None:
    data = DATA.replace(b"\n", b"\r\n", 1) + b"\n" + DATA[:-1]
    for cut in range(len(data) + 1):
        splitter = LineSplitter()
        lines = splitter.feed(data[:cut]) + splitter.feed(data[cut:]) + splitter.flush()

        assert [json.loads(line)["custom_id"] for line in lines] == list("abcdabcd"), cut


# -- the decoder -----------------------------------------------------------------------------------


def test_a_block_is_decoded_to_every_field_the_provider_reads() -> None:
    decoded: Any = decode_block(DATA)

    assert decoded is not None
    assert [line.custom_id for line in decoded] == ["a", "b", "c", "d"]
    usage = decoded[0].result.message.usage
    assert (usage.input_tokens, usage.cache_creation_input_tokens) == (3, 30)
    assert (
        usage.cache_creation.ephemeral_5m_input_tokens,
        usage.cache_creation.ephemeral_1h_input_tokens,
    ) == (10, 20)
    assert decoded[0].result.message.model == "claude-haiku-4-5"
    assert decoded[1].result.error.detail == ("overloaded_error", "busy")
    assert decoded[2].result.message is None
    assert decoded[3].result.message.usage.cache_read_input_tokens is None


def test_a_block_decodes_as_its_lines_do_one_by_one() -> None:
    assert decode_block(DATA) == [decode_line(line) for line in split_lines(DATA)]


def test_a_block_is_read_in_place_between_bounds() -> None:
    first = json.dumps(LINES[0]).encode() + b"\n"

    assert decode_block(DATA, len(first), len(DATA)) == decode_block(DATA[len(first) :])


@pytest.mark.parametrize(
    "block",
    [
        DATA.replace(b"\n", b"\r\n"),
        DATA.replace(b"\n", b"\n\n", 1),
        b"\n" + DATA,
        b" " + DATA,
        DATA.replace(b"}\n{", b"}{", 1) + b"{}\n",  # two values on one line, an empty object after
        DATA.replace(b'{"custom_id": "b"', b'{"custom_id":\n"b"', 1).replace(b"}\n{", b"}{", 1),
        b'[{"custom_id": "a", "result": {"type": "succeeded"}}]\n',
        DATA.replace(b'"custom_id": "c"', b'"custom_id": 3'),
    ],
    ids=[
        "CRLF",
        "blank line",
        "leading blank line",
        "leading space",
        "two values on a line",
        "a value across two lines",
        "not an object",
        "a custom_id of another type",
    ],
)
def test_a_block_that_is_not_one_result_per_line_goes_line_by_line(block: bytes) -> None:
    assert decode_block(block) is None


def test_a_message_of_unexpected_shape_keeps_the_line_and_its_identity() -> None:
    line = json.dumps(succeeded("a", input_tokens="many")).encode()

    decoded = decode_line(line)

    assert (decoded.custom_id, decoded.result.type, decoded.result.message) == ("a", "succeeded", None)
    assert decode_block(line + b"\n") is None
    assert decode_good_lines(line + b"\n") == [decoded]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"custom_id": "a", "result": {"type": "succ', "is not valid JSON"),
        (b'{"custom_id": "a"}', r"is not a result line \(Object missing required field `result`\)"),
        (b'{"custom_id": 7, "result": {"type": "succeeded"}}', r"is not a result line \(.*custom_id"),
        (b"[]", "is not a result line"),
    ],
)
def test_a_line_that_is_not_a_result_says_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        decode_line(line)


@pytest.mark.parametrize("chunk", [1, 7, 100, 10_000])
def test_a_bad_line_in_a_stream_is_named_by_its_number(chunk: int) -> None:
    data = DATA + b"\r\n" + b"{not json}\n" + DATA
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    with pytest.raises(ValueError, match=r"^results line 5 is not valid JSON$"):
        list(iter_result_lines(chunks))


@pytest.mark.parametrize("chunk", [1, 7, 100, 10_000])
def test_a_stream_with_crlf_blank_lines_and_no_final_newline_reads_every_result(chunk: int) -> None:
    data = DATA.replace(b"\n", b"\r\n") + b"\n\n" + DATA[:-1]
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    assert [line.custom_id for line in iter_result_lines(chunks)] == list("abcdabcd")


def test_the_content_decoder_reads_the_answer_too() -> None:
    line: Any = decode_line(json.dumps(LINES[0]).encode(), decoder=CONTENT_DECODER)

    assert line.result.message.stop_reason == "end_turn"
    assert [block.type for block in line.result.message.content] == ["text", "tool_use"]
    assert line.result.message.content[0].text == "hi {\n}"
    assert line.result.message.usage.cache_creation.ephemeral_1h_input_tokens == 20


@pytest.mark.parametrize("line", LINES, ids=["succeeded", "errored", "expired", "null count"])
def test_a_line_scanned_as_it_streams_reads_as_a_decoded_one(line: dict[str, Any]) -> None:
    raw = json.dumps(line).encode()
    scanner = JsonScanner(LINE_PATHS)
    scanner.feed(raw)

    assert line_from_paths(scanner.end()) == decode_line(raw)


# -- one home --------------------------------------------------------------------------------------

#: Field names only a results line has: a msgspec struct with one of them is a result-line schema.
RESULT_LINE_FIELDS = {
    "result",
    "usage",
    "input_tokens",
    "cache_creation_input_tokens",
    "ephemeral_1h_input_tokens",
    "stop_reason",
}
#: Cutting bytes into lines: ``x.rfind(b"\n")``, ``x.split(b"\n")``, ``x.splitlines()``.
SPLITTING = {"rfind", "split", "splitlines"}
#: Modules that read other lines: the emulator (the other side of the wire shares no client code),
#: request files (request lines), and the Parquet file's own cut of the writer's blocks into rows.
OTHER_LINES = ("emulator/", "requests", "transfers/parquet_writer.py")


def _package_modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "result_lines.py"
    ]


def result_line_schemas(tree: ast.Module) -> list[str]:
    """The msgspec structs of a module that hold a field only a results line has."""
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(ast.unparse(base).endswith("Struct") for base in node.bases)
        and {
            item.target.id
            for item in node.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
        }
        & RESULT_LINE_FIELDS
    ]


def line_cuts(tree: ast.Module) -> list[str]:
    """The calls of a module that cut bytes into lines."""
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SPLITTING
        and (node.func.attr == "splitlines" or [ast.unparse(arg) for arg in node.args[:1]] == ["b'\\n'"])
    ]


def test_no_other_module_defines_a_result_line_schema() -> None:
    found = {
        name: schemas
        for name, tree in _package_modules()
        if not name.startswith("emulator/") and (schemas := result_line_schemas(tree))
    }

    assert found == {}


def test_no_other_module_cuts_results_into_lines() -> None:
    found = {
        name: cuts
        for name, tree in _package_modules()
        if not name.startswith(OTHER_LINES) and (cuts := line_cuts(tree))
    }

    assert found == {}


def test_the_one_home_checks_refuse_a_schema_and_a_splitter_written_elsewhere() -> None:
    tree = ast.parse(
        "import msgspec\n"
        "class _Usage(msgspec.Struct):\n    input_tokens: int = 0\n"
        "class _Request(msgspec.Struct):\n    custom_id: str = ''\n"
        "def cut(data, carry):\n    data.rfind(b'\\n'); data.find(b'\\n')\n"
        "    return data.split(b'\\n') + carry.splitlines()\n"
    )

    assert result_line_schemas(tree) == ["_Usage"]
    assert [cut.split(": ", 1)[1] for cut in line_cuts(tree)] == [
        "data.rfind(b'\\n')",
        "data.split(b'\\n')",
        "carry.splitlines()",
    ]
