"""Batch requests: where they come from, how they are checked, encoded and split into batches.

Requests are streamed, never loaded whole: an inline list for small jobs, or a JSONL file at any
``ObjectStoragePath`` (``file://``, ``s3://``, ``gs://``... optionally ``.gz``) for big ones. One
pass validates every line, fingerprints the job and plans how to split it into batches that fit
the API's limits, noting where each batch starts (byte offset and line); each batch's body is then
streamed from there, so every input byte is read twice in all (once to validate, once to send) and
every line is checked once, whatever the number of batches.

One module per concern: :mod:`.limits` (the API's limits), :mod:`.reading` (the bounded reader),
:mod:`.sources` (inline list, file, subset), :mod:`.validation` (line by line), :mod:`.slicing`
(batches that fit), :mod:`.jobs` (the validated job) and :mod:`.encoding` (the streamed body).
This package re-exports their public names.
"""

from airflow_provider_batches._compat import moved_names
from airflow_provider_batches.requests.jobs import (
    MODEL_LINES_SHOWN,
    ModelUsage,
    PreparedJob,
    prepare_job,
    prepare_subset,
)
from airflow_provider_batches.requests.limits import (
    BODY_CHUNK_BYTES,
    MAX_BATCH_BYTES,
    MAX_LINE_BYTES,
    MAX_REQUESTS_PER_BATCH,
    READ_CHUNK_BYTES,
)
from airflow_provider_batches.requests.reading import (
    EXPANSION_FREE_BYTES,
    MAX_EXPANSION_RATIO,
    BoundedGzip,
    ExpansionBoundError,
    SourceLine,
    SourceSpan,
)
from airflow_provider_batches.requests.slicing import BatchSlice
from airflow_provider_batches.requests.sources import RequestSource
from airflow_provider_batches.requests.validation import (
    MAX_NESTING_DEPTH,
    MAX_REPORTED_PROBLEMS,
    UNIQUE_KEY_BITS,
    Checked,
    RequestChecker,
)

__all__ = [
    "BODY_CHUNK_BYTES",
    "EXPANSION_FREE_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_EXPANSION_RATIO",
    "MAX_LINE_BYTES",
    "MAX_NESTING_DEPTH",
    "MAX_REPORTED_PROBLEMS",
    "MAX_REQUESTS_PER_BATCH",
    "MODEL_LINES_SHOWN",
    "READ_CHUNK_BYTES",
    "UNIQUE_KEY_BITS",
    "BatchSlice",
    "BoundedGzip",
    "Checked",
    "ExpansionBoundError",
    "ModelUsage",
    "PreparedJob",
    "RequestChecker",
    "RequestSource",
    "SourceLine",
    "SourceSpan",
    "prepare_job",
    "prepare_subset",
]

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(__name__, {"CUSTOM_ID_PATTERN": "airflow_provider_batches.batch_ids"})
