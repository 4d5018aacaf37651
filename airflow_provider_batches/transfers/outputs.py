"""The output files of a results transfer: JSONL as received, JSONL with parsed answers, or Parquet rows.

:class:`ResultOutputs` opens each output in the job's staging folder in the format asked for, tells
the files which batch the lines come from, and keeps the ``invalid_output`` file: the succeeded
answers that do not match the output schema, with the reason (they keep their row in the main
output too, with ``parse_error`` set, so every result still has exactly one row).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from airflow_provider_batches.result_lines import decode_line, split_lines
from airflow_provider_batches.structured_output import StructuredOutput
from airflow_provider_batches.transfers._publish import StagedFile, Staging
from airflow_provider_batches.transfers.parquet_writer import (
    DEFAULT_ROW_GROUP_SIZE,
    PARQUET_COMPRESSIONS,
    BatchContext,
    InvalidAnswers,
    ParquetResultsFile,
)
from airflow_provider_batches.transfers.rows import (
    PARSE_ERROR_COLUMN,
    PARSED_COLUMN,
    parse_answer,
    parsed_shape,
    result_schema,
    schema_description,
)

OutputFormat = Literal["jsonl", "parquet"]
OUTPUT_FORMATS = ("jsonl", "parquet")
INVALID_OUTPUT_STEM = "invalid_output"

_encode = msgspec.json.encode


@dataclass(frozen=True)
class OutputOptions:
    """How results are written; checked once, when the operator is built."""

    output_format: OutputFormat = "jsonl"
    compression: str | None = None  # "gzip" for JSONL
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE
    parquet_compression: str = "zstd"
    structured: StructuredOutput | None = None
    #: ``prices=`` overrides for the Parquet ``cost_usd`` column (the same formula as the spend report).
    prices: Mapping[str, Mapping[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be 'jsonl' or 'parquet', got {self.output_format!r}")
        if self.output_format == "parquet":
            if self.compression is not None:
                raise ValueError(
                    "compression applies to JSONL; Parquet compresses inside the file: "
                    f"set parquet_compression (one of {', '.join(PARQUET_COMPRESSIONS)}) instead"
                )
            if self.parquet_compression not in PARQUET_COMPRESSIONS:
                raise ValueError(
                    f"parquet_compression must be one of {', '.join(PARQUET_COMPRESSIONS)}, "
                    f"got {self.parquet_compression!r}"
                )
            if importlib.util.find_spec("pyarrow") is None:  # found, not imported: DAG parsing stays fast
                raise ValueError(
                    "output_format='parquet' needs pyarrow: pip install 'airflow-provider-batches[parquet]'"
                )
            if self.structured is not None:
                parsed_shape(self.structured.json_schema)  # refuses a schema too broad for columns
        if isinstance(self.row_group_size, bool) or not isinstance(self.row_group_size, int):
            raise ValueError(f"row_group_size must be an integer, got {self.row_group_size!r}")
        if self.row_group_size < 1:
            raise ValueError(f"row_group_size must be at least 1, got {self.row_group_size}")

    def file_name(self, stem: str) -> str:
        return f"{stem}.parquet" if self.output_format == "parquet" else self.jsonl_name(stem)

    def jsonl_name(self, stem: str) -> str:
        return f"{stem}.jsonl.gz" if self.compression == "gzip" else f"{stem}.jsonl"

    def manifest_fields(self) -> dict[str, Any]:
        """What the manifest records about the format (also compared when a re-run finds an output)."""
        fields: dict[str, Any] = {
            "output_format": self.output_format,
            "output_schema": self.structured.reference() if self.structured else None,
        }
        if self.output_format == "parquet":
            fields["parquet_compression"] = self.parquet_compression
            fields["schema"] = schema_description(result_schema(self.structured))
        return fields


class _InvalidOutputFile(InvalidAnswers):
    """``invalid_output.jsonl``: one line per invalid answer, ``{custom_id, batch_id, reason, result}``."""

    def __init__(self, staging: Staging, name: str) -> None:
        self.staging = staging
        self.name = name
        self.count = 0
        self._file: StagedFile | None = None

    def add(self, custom_id: str, batch_id: str, reason: str, line: bytes) -> None:
        if self._file is None:  # opened on the first invalid answer: a clean job has no such file
            self._file = self.staging.open(self.name)
        record = {"custom_id": custom_id, "batch_id": batch_id, "reason": reason}
        result = _encode(record)[:-1] + b',"result":' + _raw_result(line) + b"}\n"
        self._file.write(result)
        self.count += 1

    def close(self) -> bool:
        """Finish the file; True when there is one."""
        if self._file is None:
            return False
        self._file.close()
        return True


class ParsedJsonlFile(StagedFile):
    """A staged JSONL output that adds ``parsed`` and ``parse_error`` to every result line."""

    whole_lines = True

    def __init__(
        self,
        name: str,
        staging: Staging,
        *,
        structured: StructuredOutput,
        context: BatchContext,
        invalid: InvalidAnswers,
    ) -> None:
        super().__init__(name, staging.folder / name, gzip_level=staging.gzip_level)
        self.structured = structured
        self.context = context
        self.invalid = invalid

    def write(self, data: bytes | memoryview) -> None:
        out = bytearray()
        for raw in split_lines(data):
            line = raw.strip()
            parsed = decode_line(line)
            value, problem = None, None
            if parsed.result.type == "succeeded":
                value, problem = parse_answer(self.structured, line)
                if problem is not None:
                    self.invalid.add(parsed.custom_id, self.context.batch_id, problem, line)
            out += line[:-1]
            out += b',"' + PARSED_COLUMN.encode() + b'":' + _encode(value)
            out += b',"' + PARSE_ERROR_COLUMN.encode() + b'":' + _encode(problem) + b"}\n"
        super().write(bytes(out))


class ResultOutputs:
    """The outputs of one transfer, opened in ``staging`` in the format ``options`` asks for."""

    def __init__(self, staging: Staging, options: OutputOptions) -> None:
        self.staging = staging
        self.options = options
        self.context = BatchContext()
        self._schema = result_schema(options.structured) if options.output_format == "parquet" else None
        self.invalid = _InvalidOutputFile(staging, options.jsonl_name(INVALID_OUTPUT_STEM))

    def start_batch(self, batch_id: str, round_number: int | None = None) -> None:
        """The lines written from now on come from this batch."""
        self.context.batch_id = batch_id
        self.context.round = round_number

    def open(self, stem: str) -> StagedFile:
        name = self.options.file_name(stem)
        options = self.options
        staged: StagedFile
        if options.output_format == "parquet":
            staged = ParquetResultsFile(
                name,
                self.staging.folder / name,
                schema=self._schema,
                context=self.context,
                row_group_size=options.row_group_size,
                compression=options.parquet_compression,
                structured=options.structured,
                invalid=self.invalid,
                prices=options.prices,
            )
        elif options.structured is not None:
            staged = ParsedJsonlFile(
                name, self.staging, structured=options.structured, context=self.context, invalid=self.invalid
            )
        else:
            return self.staging.open(name)
        self.staging.files[name] = staged
        return staged

    def finish(self) -> dict[str, dict[str, int]]:
        """Close the job-wide files; their names and counts (for the manifest's file list)."""
        if self.invalid.close():
            return {self.invalid.name: {INVALID_OUTPUT_STEM: self.invalid.count}}
        return {}

    def manifest_fields(self) -> dict[str, Any]:
        fields = self.options.manifest_fields()
        if self.options.structured is not None:
            fields["invalid_output"] = {
                "file": self.invalid.name if self.invalid.count else None,
                "results": self.invalid.count,
            }
        return fields


def _raw_result(line: bytes) -> bytes:
    """The ``result`` object of a line, as the raw JSON it was received as."""
    return _encode(msgspec.json.decode(line, type=dict[str, msgspec.Raw])["result"])
