"""The measured variants. Each runs alone in a fresh interpreter (see :mod:`bench.measure`) and
imports only what it uses, so its peak RSS is its own. The Airflow connection comes from
``AIRFLOW_CONN_ANTHROPIC_DEFAULT`` (set by the caller), which both providers read.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
import re
import time
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any

from bench.measure import Timer, child_main

API_HEADERS = {"x-api-key": "sk-ant-emulator-key", "anthropic-version": "2023-06-01"}
CHUNK = 1 << 20
#: Part size of the S3 floors' multipart uploads (ours uploads 8 MiB parts too).
S3_PART_BYTES = 8 << 20


def _base_url() -> str:
    return str(json.loads(os.environ["AIRFLOW_CONN_ANTHROPIC_DEFAULT"])["host"])


def _result(timer: Timer, **extra: Any) -> dict[str, Any]:
    return {"wall": timer.wall, "cpu": timer.cpu, **extra}


# -- memory floor -----------------------------------------------------------------------------------


def import_airflow() -> dict[str, Any]:
    """A bare ``import airflow`` process: the memory floor of any Airflow task process."""
    timer = Timer()
    with timer.measure():
        import airflow  # noqa: F401
    return _result(timer)


# -- 1. results export ------------------------------------------------------------------------------


def results_raw_copy(
    results_urls: list[str], out_dir: str, s3_writer: str = "multipart", part_bytes: int = S3_PART_BYTES
) -> dict[str, Any]:
    """The floor: httpx streams each results URL's bytes into a local file (or, when ``out_dir`` is an
    ``s3://`` prefix, into one S3 object each, written by ``s3_writer``), one after another,
    nothing else."""
    _import_s3_library(out_dir, s3_writer)
    timer = Timer()
    with timer.measure():
        size = 0
        for index, results_url in enumerate(results_urls):
            with _sink(out_dir, f"raw-{index}.jsonl", s3_writer, part_bytes) as out:
                size += _download_into(results_url, out)
    return _result(timer, bytes=size)


def _download(results_url: str, target: Path) -> None:
    with target.open("wb") as out:
        _download_into(results_url, out)


def _download_into(results_url: str, out: Any) -> int:
    import httpx

    size = 0
    with (
        httpx.Client(headers=API_HEADERS, timeout=600) as client,
        client.stream("GET", results_url) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes():  # as the socket delivers: no re-chunking
            out.write(chunk)
            size += len(chunk)
    return size


# -- the export floors' destinations: a local file, or S3 -------------------------------------------

#: How the S3 verify floor writes: ``multipart`` (boto3 ``upload_part`` per ``part_bytes`` of blocks),
#: ``multipart-nocrc`` (the same without botocore's default CRC32 of every part) or ``s3fs`` (an
#: ``S3FileSystem`` file opened "wb" with ``part_bytes`` blocks).
S3_WRITERS = ("multipart", "multipart-nocrc", "s3fs")


def _s3_endpoint() -> dict[str, Any]:
    """boto3 client arguments from ``AIRFLOW_CONN_AWS_DEFAULT`` (set by the caller)."""
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    return {
        "endpoint_url": conn["extra"]["endpoint_url"],
        "region_name": conn["extra"].get("region_name", "us-east-1"),
        "aws_access_key_id": conn["login"],
        "aws_secret_access_key": conn["password"],
    }


@functools.cache
def _s3_client(writer: str) -> Any:
    import boto3
    from botocore.config import Config

    checksums = "when_required" if writer.endswith("-nocrc") else "when_supported"
    return boto3.client("s3", config=Config(request_checksum_calculation=checksums), **_s3_endpoint())


class _MultipartUpload:
    """Bytes written into one S3 object by boto3: ``part_bytes`` parts, each sent when full; completed
    on close (a PUT when the whole object fits one part); aborted when the writing fails."""

    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int) -> None:
        self.client, self.bucket, self.key, self.part_bytes = client, bucket, key, part_bytes
        self.pending: list[bytes] = []
        self.held = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.held += len(data)
        if self.held >= self.part_bytes:
            self._send()

    def _send(self) -> None:
        if self.upload_id is None:
            created = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        body = b"".join(self.pending)
        self.pending, self.held = [], 0
        sent = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def __enter__(self) -> _MultipartUpload:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            if self.upload_id is not None:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            return
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=b"".join(self.pending))
            return
        if self.pending:
            self._send()
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )


def _import_s3_library(out_dir: str, writer: str) -> None:
    """Import what writes to S3 before the work, as httpx and msgspec are (the client is made in it)."""
    if out_dir.startswith("s3://"):
        importlib.import_module("s3fs" if writer == "s3fs" else "boto3")


def _sink(out_dir: str, name: str, writer: str, part_bytes: int) -> Any:
    """A binary file-like for the output ``name`` under ``out_dir``: a local folder or ``s3://bucket/prefix``."""
    if not out_dir.startswith("s3://"):
        return (Path(out_dir) / name).open("wb")
    bucket, _, prefix = out_dir.removeprefix("s3://").partition("/")
    key = f"{prefix.strip('/')}/{name}"
    if writer == "s3fs":
        import s3fs

        endpoint = _s3_endpoint()
        fs = s3fs.S3FileSystem(
            key=endpoint["aws_access_key_id"],
            secret=endpoint["aws_secret_access_key"],
            endpoint_url=endpoint["endpoint_url"],
            client_kwargs={"region_name": endpoint["region_name"]},
        )
        return fs.open(f"{bucket}/{key}", "wb", block_size=part_bytes)
    return _MultipartUpload(_s3_client(writer), bucket, key, part_bytes)


# -- the verify-every-line floor --------------------------------------------------------------------


def _verified_blocks(client: Any, batch_id: str, digest: str, tally: dict[str, int]) -> Iterator[bytes]:
    """One batch's results as verified whole-line blocks, each check ours makes done by hand with its
    cheapest technique: read its ``request_counts``; stream the results (``iter_bytes``), cut whole-line
    blocks, one msgspec ``decode_lines`` per block (custom_id and result type of every line), one value
    per line (a ``find`` per line: three times cheaper than ``bytes.count``), every custom_id valid (one
    regex per block), custom_ids in a set (each once), counts per type (``Counter``) against
    ``request_counts``, sha256 of the bytes; after the last block the custom_ids' digest (the sum of
    their 128-bit BLAKE2b hashes) against the job's ``digest``. Adds the batch's results and bytes to
    ``tally``."""
    import hashlib
    from collections import Counter

    decode_lines, valid_ids = _line_decoder(), _VALID_IDS.fullmatch
    batch = client.get(f"{_base_url()}/v1/messages/batches/{batch_id}").raise_for_status().json()
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    sha256 = hashlib.sha256()
    carry = b""
    with client.stream("GET", batch["results_url"]) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            last = chunk.rfind(b"\n")
            if last < 0:
                carry += chunk
                continue
            block = carry + chunk[: last + 1] if carry else chunk[: last + 1]
            carry = chunk[last + 1 :]
            lines: list[Any] = decode_lines(block)
            if len(lines) != _values_per_line(block):
                raise ValueError("a line with two values")
            ids = list(map(_CUSTOM_ID, lines))
            if valid_ids("\n".join(ids) + "\n") is None:
                raise ValueError("a custom_id no request can have")
            before = len(seen)
            seen.update(ids)
            if len(seen) - before != len(ids):
                raise ValueError("a custom_id twice")
            counts.update(map(_KIND, lines))
            sha256.update(block)
            yield block
            tally["bytes"] += len(block)
    if carry:
        raise ValueError("the last line has no newline")  # the API ends every line
    expected = {k: v for k, v in batch["request_counts"].items() if k != "processing" and v}
    if counts != expected:
        raise ValueError(f"counts {dict(counts)} != {expected}")
    blake2b = hashlib.blake2b
    received = sum(int.from_bytes(blake2b(i.encode(), digest_size=16).digest()) for i in seen)
    if f"{received % (1 << 128):032x}" != digest:
        raise ValueError("the results carry other custom_ids than the job submitted")
    tally["results"] += len(seen)
    sha256.hexdigest()


_VALID_IDS = re.compile(r"(?:[a-zA-Z0-9_-]{1,64}\n)*")
_CUSTOM_ID, _KIND = attrgetter("custom_id"), attrgetter("result.type")


def _values_per_line(block: bytes) -> int:
    """How many lines ``block`` holds, each ``{`` ... ``}``: one JSON value per line."""
    if not block.startswith(b"{"):
        raise ValueError("a line that is not one JSON object")
    find, lines, position, end = block.find, 0, 0, len(block)
    while (newline := find(b"\n", position)) >= 0:
        if block[newline - 1] != 0x7D or (newline + 1 < end and block[newline + 1] != 0x7B):
            raise ValueError("a blank line or a line with two values")
        lines += 1
        position = newline + 1
    return lines


@functools.cache
def _line_decoder() -> Any:
    import msgspec

    result_type = msgspec.defstruct("ResultType", [("type", str)])
    line_type = msgspec.defstruct("ResultLine", [("custom_id", str), ("result", result_type)])
    return msgspec.json.Decoder(line_type).decode_lines


def results_verify_floor(
    batch_ids: list[str],
    out_dir: str,
    digests: dict[str, str],
    s3_writer: str = "multipart",
    part_bytes: int = S3_PART_BYTES,
) -> dict[str, Any]:
    """The verify-every-line floor, written by hand: every batch's verified blocks
    (:func:`_verified_blocks`), one write per block into a local file or, when ``out_dir`` is an
    ``s3://`` prefix, into one S3 object per batch written by ``s3_writer`` (see :data:`S3_WRITERS`)."""
    import httpx

    _line_decoder()
    _import_s3_library(out_dir, s3_writer)
    timer = Timer()
    tally = {"results": 0, "bytes": 0}
    with timer.measure(), httpx.Client(headers=API_HEADERS, timeout=600) as client:
        for batch_id in batch_ids:
            with _sink(out_dir, f"floor-{batch_id}.jsonl", s3_writer, part_bytes) as out:
                for block in _verified_blocks(client, batch_id, digests[batch_id], tally):
                    out.write(block)
    return _result(timer, **tally)


def results_ours(
    batch_id: str | list[str] | dict[str, Any], out_dir: str, dest_conn_id: str | None = None, **options: Any
) -> dict[str, Any]:
    """AnthropicBatchResultsToObjectStorageOperator.execute to ``out_dir``: a local folder (file://) or
    an ``s3://bucket/prefix`` reached through the Airflow connection ``dest_conn_id`` (``options``: e.g.
    ``output_format="parquet"``)."""
    from airflow_provider_batches.transfers.results_to_object_storage import (
        AnthropicBatchResultsToObjectStorageOperator,
    )

    destination = f"{out_dir.rstrip('/')}/ours/" if out_dir.startswith("s3://") else f"file://{out_dir}/ours/"
    operator = AnthropicBatchResultsToObjectStorageOperator(
        task_id="export",
        batch_id=batch_id,
        destination=destination,
        dest_conn_id=dest_conn_id,
        overwrite=True,
        **options,
    )
    if out_dir.startswith("s3://"):
        # Imported before the work, as the floors import boto3 (the process CPU column counts them).
        import airflow.providers.amazon.aws.fs.s3  # noqa: F401
        import s3fs  # noqa: F401
    timer = Timer()
    with timer.measure():
        manifest = operator.execute({})  # type: ignore[arg-type]  # no outlets: the context is not read
    return _result(timer, bytes=manifest["bytes"], results=manifest["results"], counts=manifest["counts"])


def results_pyarrow_plain(
    results_url: str, batch_id: str, out_dir: str, block_bytes: int = 16 << 20
) -> dict[str, Any]:
    """The Parquet floor, by hand: download the lines to a file; per block of ``block_bytes`` of whole
    lines, ``pyarrow.json.read_json`` of only the fields the columns need (explicit schema, one thread:
    the least CPU), the same columns as ours by pyarrow compute (answer text joined, usage, ``cost_usd``
    at batch prices, errors, the raw line, batch id, round), written as a row group of at most 10,000
    rows with the same writer settings as ours (``block_bytes=0``: the whole file as one table, which
    costs more CPU). No verification."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from airflow_provider_batches.pricing import BATCH_DISCOUNT, price_for
    from airflow_provider_batches.transfers.rows import DICTIONARY_COLUMNS, result_schema

    schema = result_schema()
    timer = Timer()
    lines_path = Path(out_dir) / "plain.jsonl"
    target = Path(out_dir) / "plain.parquet"
    tokens = ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
    usage_type = pa.struct(
        [(name, pa.int64()) for name in tokens]
        + [("cache_creation", pa.struct([("ephemeral_1h_input_tokens", pa.int64())]))]
    )
    line_type = pa.schema(
        {
            "custom_id": pa.string(),
            "result": pa.struct(
                {
                    "type": pa.string(),
                    "message": pa.struct(
                        {
                            "model": pa.string(),
                            "stop_reason": pa.string(),
                            "content": pa.list_(pa.struct({"type": pa.string(), "text": pa.string()})),
                            "usage": usage_type,
                        }
                    ),
                    "error": pa.struct({"error": pa.struct({"type": pa.string(), "message": pa.string()})}),
                }
            ),
        }
    )

    def rows(data: bytes) -> pa.Table:
        parsed = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data)),
            parse_options=pj.ParseOptions(explicit_schema=line_type, unexpected_field_behavior="ignore"),
        )
        n = parsed.num_rows
        result = parsed.column("result").combine_chunks()
        ok = pc.equal(pc.struct_field(result, "type"), "succeeded")
        null = {kind: pa.scalar(None, kind) for kind in (pa.string(), pa.int64(), pa.float64())}

        def message(*path: str) -> Any:
            field = pc.struct_field(result, ["message", *path])
            return pc.if_else(ok, field, null[field.type])

        content = pc.struct_field(result, ["message", "content"])
        kinds = pc.struct_field(content.values, "type")
        texts = pc.struct_field(content.values, "text")
        text_flags = pc.fill_null(pc.and_(pc.equal(kinds, "text"), pc.is_valid(texts)), False)
        running = pa.concat_arrays([pa.array([0]), pc.cumulative_sum(text_flags.cast(pa.int64()))])
        text_counts = pc.subtract(
            pc.take(running, content.offsets[1:]), pc.take(running, content.offsets[:-1])
        )
        joined = pc.binary_join(
            pa.ListArray.from_arrays(content.offsets, pc.if_else(text_flags, texts, "")), ""
        )
        usage = {name: message("usage", name) for name in tokens}
        one_hour = pc.fill_null(message("usage", "cache_creation", "ephemeral_1h_input_tokens"), 0)
        model = message("model")
        cost = pa.nulls(n, pa.float64())
        for name in pc.unique(model).drop_null().to_pylist():
            price = price_for(name)
            if price is None:
                continue
            given = {key: pc.fill_null(value, 0) for key, value in usage.items()}
            writes = given["cache_creation_input_tokens"]
            hour = pc.min_element_wise(one_hour, writes)
            per_token = [
                (given["input_tokens"], price.input_per_mtok),
                (pc.subtract(writes, hour), price.cache_write_5m),
                (hour, price.cache_write_1h),
                (given["cache_read_input_tokens"], price.cache_read),
                (given["output_tokens"], price.output_per_mtok),
            ]  # the bench's model has no long-context tier
            total = pc.multiply(per_token[0][0], per_token[0][1])
            for count, rate in per_token[1:]:
                total = pc.add(total, pc.multiply(count, rate))
            priced = pc.and_(
                pc.equal(model, name), pc.is_valid(pc.struct_field(result, ["message", "usage"]))
            )
            cost = pc.if_else(
                pc.fill_null(priced, False), pc.multiply(pc.divide(total, 1e6), BATCH_DISCOUNT), cost
            )
        tools = pc.fill_null(pc.equal(kinds, "tool_use"), False)
        if pc.any(tools).as_py():
            raise NotImplementedError(
                "tool calls: re-encode their inputs row by row (none in the bench data)"
            )
        bounds = pa.array([0, len(data)], pa.int32()).buffers()[1]
        whole = pa.Array.from_buffers(pa.binary(), 1, [None, bounds, pa.py_buffer(data)])  # no copy
        lines = pc.split_pattern(whole, pattern="\n").values  # one copy in C++, no Python object per line
        columns = {
            "custom_id": parsed.column("custom_id").combine_chunks(),
            "batch_id": pa.repeat(pa.scalar(batch_id), n),
            "round": pa.repeat(pa.scalar(1, pa.int32()), n),
            "result_type": pc.struct_field(result, "type"),
            "model": model,
            "stop_reason": message("stop_reason"),
            "text": pc.if_else(pc.and_(ok, pc.greater(text_counts, 0)), joined, null[pa.string()]),
            "tool_calls": pa.nulls(n, pa.string()),
            **usage,
            "cost_usd": cost,
            "error_type": pc.struct_field(result, ["error", "error", "type"]),
            "error_message": pc.struct_field(result, ["error", "error", "message"]),
            "raw": lines.slice(0, n).view(pa.string()),
        }
        return pa.table(columns, schema=schema)

    results = 0
    with timer.measure():
        _download(results_url, lines_path)
        data = lines_path.read_bytes()
        with pq.ParquetWriter(
            target, schema, compression="zstd", use_dictionary=list(DICTIONARY_COLUMNS)
        ) as writer:
            start = 0
            while start < len(data):
                end = data.rfind(b"\n", start, start + block_bytes) + 1 if block_bytes else len(data)
                table = rows(data[start:end])
                writer.write_table(table, row_group_size=10_000)
                results += table.num_rows
                start = end
    return _result(timer, bytes=target.stat().st_size, results=results)


def results_vendor(batch_id: str, out_dir: str) -> dict[str, Any]:
    """The vendor provider: its hook's ``stream_batch_results``, each result written as a JSON line."""
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    timer = Timer()
    target = Path(out_dir) / "vendor.jsonl"
    results = 0
    hook = AnthropicHook()  # held: a dropped hook's client closes the stream under the loop
    with timer.measure(), target.open("wb") as out:
        for result in hook.stream_batch_results(batch_id):
            out.write(result.model_dump_json().encode() + b"\n")
            results += 1
    return _result(timer, bytes=target.stat().st_size, results=results)


# -- 2. batch creation ------------------------------------------------------------------------------


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


def create_raw_upload(body_path: str) -> dict[str, Any]:
    """The floor: httpx streams the finished request body from disk (no validation, no encoding)."""
    import httpx

    timer = Timer()
    with timer.measure(), httpx.Client(headers=API_HEADERS, timeout=600) as client:
        response = client.post(
            f"{_base_url()}/v1/messages/batches",
            content=_file_chunks(Path(body_path)),
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
    return _result(timer, batches=1, requests=response.json()["request_counts"]["processing"])


def create_raw_batches(body_paths: list[str]) -> dict[str, Any]:
    """The floor of a many-batch job: httpx streams each finished body from disk, one after another."""
    import httpx

    timer = Timer()
    requests = 0
    with timer.measure(), httpx.Client(headers=API_HEADERS, timeout=600) as client:
        for body_path in body_paths:
            response = client.post(
                f"{_base_url()}/v1/messages/batches",
                content=_file_chunks(Path(body_path)),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            requests += response.json()["request_counts"]["processing"]
    return _result(timer, batches=len(body_paths), requests=requests)


def create_validate_floor(requests_path: str) -> dict[str, Any]:
    """The validate-then-upload floor, written by hand: one pass decodes every line in full (msgspec)
    and checks it as ours does at its core (an object with only custom_id and params; custom_id valid
    and unique; no key twice in one object; params an object with a model, a positive integer
    max_tokens and a non-empty messages list), then a second pass streams the body
    (``{"requests":[...]}`` from the lines as they are) in as many creates as the API's limits require
    (at most 100,000 requests and 256 MB each). No job record, no re-attach
    check, no watermark, no per-field problem report: the ratio is our overhead over the checks."""
    import re

    import httpx
    import msgspec

    pattern = re.compile(r"[a-zA-Z0-9_-]{1,64}")
    decode, encode = msgspec.json.decode, msgspec.json.encode
    path = Path(requests_path)
    timer = Timer()
    with timer.measure():
        seen: set[str] = set()
        with path.open("rb") as source:
            for number, line in enumerate(source, 1):
                value = decode(line)
                if not (type(value) is dict and value.keys() == {"custom_id", "params"}):
                    raise ValueError(f"line {number}: not a request")
                if line.count(b'":') != encode(value).count(b'":'):
                    raise ValueError(f"line {number}: a key twice")
                custom_id, params = value["custom_id"], value["params"]
                if type(custom_id) is not str or not pattern.fullmatch(custom_id) or custom_id in seen:
                    raise ValueError(f"line {number}: custom_id invalid or repeated")
                seen.add(custom_id)
                if not (
                    type(params) is dict
                    and type(params.get("model")) is str
                    and type(params.get("max_tokens")) is int
                    and params["max_tokens"] > 0
                    and type(params.get("messages")) is list
                    and params["messages"]
                ):
                    raise ValueError(f"line {number}: params incomplete")

        batches = requests = 0
        with httpx.Client(headers=API_HEADERS, timeout=600) as client, path.open("rb") as source:
            for body in _sliced_bodies(source):  # the API's limits: >= 10 batches for 1M requests
                response = client.post(
                    f"{_base_url()}/v1/messages/batches",
                    content=_joined(body),
                    headers={"content-type": "application/json"},
                )
                response.raise_for_status()
                batches += 1
                requests += response.json()["request_counts"]["processing"]
    return _result(timer, batches=batches, requests=requests)


#: The API's limits on one batch (API_SPEC.md): at most 100,000 requests and 256 MB of body.
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 256_000_000


def _sliced_bodies(lines: Iterator[bytes]) -> Iterator[Iterator[bytes]]:
    """The create bodies ``{"requests":[...]}`` of the lines, each within the API's limits, one after
    another (each body is sent before the next is read)."""
    pending = next(lines, None)
    while pending is not None:

        def body() -> Iterator[bytes]:
            nonlocal pending
            count, size = 0, len(b'{"requests":[]}')
            yield b'{"requests":['
            while pending is not None:
                line = pending.rstrip(b"\r\n")
                if count and (count >= BATCH_MAX_REQUESTS or size + 1 + len(line) > BATCH_MAX_BYTES):
                    break
                yield (b"," if count else b"") + line
                count, size = count + 1, size + (1 if count else 0) + len(line)
                pending = next(lines, None)
            yield b"]}"

        yield body()


def _joined(pieces: Iterator[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """Pieces gathered into ~1 MiB writes (one socket send per MiB, not per line)."""
    buffer: list[bytes] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


class _TaskStateStore:
    """``context["task_state_store"]``: the job record kept in memory, as JSON (what Airflow stores)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = json.dumps(value)


class _TaskInstance:
    max_tries = 0

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def create_operator(requests_path: str) -> dict[str, Any]:
    """The create operator's real ``execute()``: validation, job record, re-attach check, each batch's
    create with intent and watermark, then the manifest (no waiting: the batches stay in progress)."""
    from airflow_provider_batches.operators.batches import AnthropicCreateBatchOperator

    operator = AnthropicCreateBatchOperator(
        task_id="create", requests_path=requests_path, wait_for_completion=False, deferrable=False
    )
    context = {"ti": _TaskInstance(), "task_state_store": _TaskStateStore()}
    timer = Timer()
    with timer.measure():
        manifest = operator.execute(context)  # type: ignore[arg-type]
    operator.hook.close()
    return _result(timer, batches=len(manifest["batch_ids"]), requests=manifest["request_count"])


def create_vendor(requests_path: str) -> dict[str, Any]:
    """The vendor provider: the request list loaded from the file, then ``create_batch``."""
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    timer = Timer()
    with timer.measure():
        with open(requests_path, "rb") as source:
            requests = [json.loads(line) for line in source if line.strip()]
        batch = AnthropicHook().create_batch(requests)
    return _result(timer, batches=1, requests=batch.request_counts.processing)


# -- 3. waiting -------------------------------------------------------------------------------------


async def _drive_until_ended(
    triggers: dict[str, Any], ends: dict[str, float], max_wait: float
) -> dict[str, Any]:
    """Run every trigger's ``run()`` concurrently until each fires or ``max_wait`` s after the last
    batch's end. Batches end on their own timers in the emulator (no clock jump, so rate-limit
    windows and per-minute stats stay real).

    Returns each event's latency after its own batch's end, the statuses, and the CPU spent per
    waiting batch per minute (from 5 s after the start, over the minutes each batch waited)."""
    fired: dict[str, float] = {}
    statuses: dict[str, int] = {}

    async def consume(batch_id: str, trigger: Any) -> None:
        async for event in trigger.run():
            fired.setdefault(batch_id, time.time())
            status = str(getattr(event, "payload", {}).get("status"))
            statuses[status] = statuses.get(status, 0) + 1

    started = time.time()
    tasks = [asyncio.create_task(consume(batch_id, trigger)) for batch_id, trigger in triggers.items()]
    first_end, last_end = min(ends.values()), max(ends.values())
    await asyncio.sleep(max(0.0, min(5.0, (first_end - started) / 2)))  # the triggers start
    cpu_start, quiet_start = time.process_time(), time.time()
    deadline = last_end + max_wait
    while len(fired) < len(triggers) and time.time() < deadline:
        await asyncio.sleep(0.2)
    waiting_cpu, stopped = time.process_time() - cpu_start, time.time()
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    crashed = sum(1 for result in results if isinstance(result, Exception))
    latencies = {batch_id: at - ends[batch_id] for batch_id, at in fired.items()}
    waited = sum(max(0.0, fired.get(batch_id, stopped) - quiet_start) for batch_id in triggers)
    return {
        "latencies": sorted(value for value in latencies.values() if value >= 0),
        "early_events": sum(1 for value in latencies.values() if value < 0),
        "ended_before_start": sum(1 for end in ends.values() if end < started),
        "statuses": statuses,
        "crashed": crashed,
        "waiting_cpu": waiting_cpu,
        "batch_minutes_waited": max(waited / 60, 1e-9),
    }


def _ends(batch_ends_path: str) -> dict[str, float]:
    return {batch_id: float(end) for batch_id, end in json.loads(Path(batch_ends_path).read_text()).items()}


def wait_ours(batch_ends_path: str, max_wait: float, interval: float, max_interval: float) -> dict[str, Any]:
    """``AnthropicBatchTrigger`` per batch (all of one connection: they share its poller)."""
    from airflow_provider_batches.triggers.batches import AnthropicBatchTrigger

    ends = _ends(batch_ends_path)
    triggers = {
        batch_id: AnthropicBatchTrigger(
            batch_ids=[batch_id],
            deadline=time.time() + 24 * 3600,
            poll_interval=interval,
            max_poll_interval=max_interval,
        )
        for batch_id in ends
    }
    timer = Timer()
    with timer.measure():
        outcome = asyncio.run(_drive_until_ended(triggers, ends, max_wait))
    return _result(timer, **outcome)


def wait_vendor(
    batch_ends_path: str, max_wait: float, interval: float, max_interval: float
) -> dict[str, Any]:
    """The vendor's ``AnthropicBatchTrigger`` per batch (the sync SDK in threads, no back-off), at
    ``interval``: its own default shortened as ours are."""
    from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

    ends = _ends(batch_ends_path)
    triggers = {
        batch_id: AnthropicBatchTrigger(
            conn_id="anthropic_default",
            batch_id=batch_id,
            poll_interval=interval,
            end_time=time.time() + 24 * 3600,
        )
        for batch_id in ends
    }
    timer = Timer()
    with timer.measure():
        outcome = asyncio.run(_drive_until_ended(triggers, ends, max_wait))
    return _result(timer, **outcome)


# -- 4. token counting ------------------------------------------------------------------------------


def count_ours(requests_path: str) -> dict[str, Any]:
    """``AnthropicCountTokensOperator(requests_path=...).execute``."""
    from airflow_provider_batches.operators.tokens import AnthropicCountTokensOperator

    operator = AnthropicCountTokensOperator(task_id="count", requests_path=requests_path)
    timer = Timer()
    with timer.measure():
        summary = operator.execute({})  # type: ignore[arg-type]
    return _result(timer, requests=summary["request_count"], input_tokens=summary["input_tokens"])


def count_vendor(requests_path: str) -> dict[str, Any]:
    """The vendor hook's ``count_tokens`` for each request in turn (it has no counting operator)."""
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    hook = AnthropicHook()
    counted = tokens = failures = 0
    timer = Timer()
    with timer.measure(), open(requests_path, "rb") as source:
        for line in source:
            params = json.loads(line)["params"]
            try:
                tokens += hook.count_tokens(
                    params["messages"], model=params["model"], system=params.get("system")
                )
                counted += 1
            except Exception:
                failures += 1
    return _result(timer, requests=counted, input_tokens=tokens, failures=failures)


VARIANTS = {
    name: function
    for name, function in globals().items()
    if callable(function)
    and getattr(function, "__module__", None) == __name__
    and not name.startswith("_")
    and name not in ("child_main",)
}

if __name__ == "__main__":
    child_main(VARIANTS)
