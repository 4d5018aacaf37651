"""A staged Parquet file fed with verified result lines, written in row groups with bounded buffers.

Lines are buffered as received and turned into rows (:mod:`.rows`) once ``max_buffer_bytes`` of input
are buffered, then written in row groups of at most ``row_group_size`` rows, so memory depends on the
buffer, never on the batch. The Parquet bytes go through :class:`StagedFile` (hashed, counted,
uploaded in parts) and are published like any other output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.transfers import rows
from airflow_provider_batches.transfers._publish import StagedFile
from airflow_provider_batches.transfers.rows import RowBuffer

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_batches.structured_output import StructuredOutput

DEFAULT_ROW_GROUP_SIZE = 10_000
#: Input bytes buffered before rows are built and written. Measured at 100,000 results of 2.4 KB:
#: 8 MiB saves little CPU (each flush's fixed cost is small once rows are built per column) and adds
#: about 30 MiB of peak RSS; 4 MiB keeps the transfer within its memory budget.
MAX_BUFFER_BYTES = 4 * 1024 * 1024
PARQUET_COMPRESSIONS = ("snappy", "zstd", "gzip", "brotli", "lz4", "none")


@dataclass
class BatchContext:
    """Which batch (and re-drive round) the lines being written come from; shared by a job's files."""

    batch_id: str = ""
    round: int | None = None


class InvalidAnswers:
    """Receives the answers that do not match the output schema (the job's ``invalid_output`` file)."""

    def add(self, custom_id: str, batch_id: str, reason: str, line: bytes) -> None:
        raise NotImplementedError


class _Stream:
    """The file object pyarrow writes to: bytes go to the staged file's storage, nothing else."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._position = 0
        self.closed = False
        self.discarded = False

    def write(self, data: Any) -> int:
        if self.discarded:  # an aborted file: pyarrow's last words are dropped, never uploaded
            return len(data)
        view = memoryview(data)
        self._store(view)
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing to do: the staged file decides when to upload a part."""

    def close(self) -> None:
        self.closed = True


class ParquetResultsFile(StagedFile):
    """A staged output whose :meth:`write` takes LF-terminated result lines and stores Parquet."""

    whole_lines = True

    def __init__(
        self,
        name: str,
        staged_path: ObjectStoragePath,
        *,
        schema: pa.Schema,
        context: BatchContext,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        compression: str = "zstd",
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        structured: StructuredOutput | None = None,
        invalid: InvalidAnswers | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(name, staged_path, gzip_level=None)
        self.context = context
        self.row_group_size = row_group_size
        self.max_buffer_bytes = max_buffer_bytes
        self.invalid = invalid
        self.rows = 0
        self._buffer = RowBuffer(schema, structured, prices)
        self._stream = _Stream(super().write)
        self._writer = pq.ParquetWriter(
            pa.PythonFile(self._stream, mode="w"),
            schema,
            compression=compression,
            use_dictionary=list(rows.DICTIONARY_COLUMNS),
        )

    def write(self, data: bytes | memoryview) -> None:
        """Add the rows of complete lines; write them once ``max_buffer_bytes`` are buffered."""
        invalid = self._buffer.add(data, self.context.batch_id, self.context.round)
        if self.invalid is not None:
            for custom_id, reason, line in invalid:
                self.invalid.add(custom_id, self.context.batch_id, reason, line)
        if self._buffer.nbytes >= self.max_buffer_bytes:
            self._flush()

    def close(self) -> None:
        """Write the last row groups and the footer, then finish the staged object."""
        if self._buffer.nbytes:
            self._flush()
        self._writer.close()
        super().close()

    def abort(self) -> None:
        self._stream.discarded = True
        super().abort()

    def _flush(self) -> None:
        """The buffered rows, in row groups of ``row_group_size`` (the last one of a flush maybe fewer)."""
        rows = self._buffer.take()
        self.rows += rows.num_rows
        self._writer.write_batch(rows, row_group_size=self.row_group_size)
