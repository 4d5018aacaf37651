"""OpenLineage for the create operator and the results transfer: datasets, statistics and facets.

The OpenLineage provider (``apache-airflow-providers-openlineage``) is optional: it is imported here
only when the listener asks an operator for its lineage, and every builder returns None without it.

Naming: a batch is the dataset ``message_batches/<batch_id>`` in the ``anthropic`` namespace (the
create operator's output, the transfer's input, so the two link up in a catalog); a file is named
by the OpenLineage convention for its storage (``s3://bucket`` + key, ``file`` + path...).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

#: The OpenLineage namespace of Message Batches, and the facet keys this provider adds.
BATCH_NAMESPACE = "anthropic"
CREATE_FACET_KEY = "anthropicBatch"
RESULTS_FACET_KEY = "anthropicBatchResults"


def batch_dataset_name(batch_id: str) -> str:
    return f"message_batches/{batch_id}"


def uri_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a file by the OpenLineage naming convention; a bare path is a local file."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return "file", parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def create_batch_lineage(
    *,
    requests_path: str | None,
    models: Mapping[str, int],
    manifest: Mapping[str, Any] | None,
) -> Any:
    """The create task's lineage: the requests file in, the batches out, models and counts as a facet."""
    ol = _openlineage()
    if ol is None or not manifest:
        return None
    batch_ids = list(manifest.get("batch_ids") or [])
    inputs = [ol.InputDataset(*uri_dataset(requests_path))] if requests_path else []
    outputs = [ol.OutputDataset(BATCH_NAMESPACE, batch_dataset_name(batch_id)) for batch_id in batch_ids]
    facet = ol.BatchFacet(
        models=dict(models),
        requestCount=int(manifest.get("request_count") or 0),
        batchIds=batch_ids,
        requestCounts=dict(manifest.get("request_counts") or {}),
    )
    return ol.OperatorLineage(inputs=inputs, outputs=outputs, run_facets={CREATE_FACET_KEY: facet})


def results_transfer_lineage(manifest: Mapping[str, Any] | None) -> Any:
    """The transfer's lineage: each batch in (its result count), each written file out (rows, bytes)."""
    ol = _openlineage()
    if ol is None or not manifest:
        return None
    per_batch: Mapping[str, Mapping[str, int]] = manifest.get("batches") or {}
    inputs = [
        ol.InputDataset(
            BATCH_NAMESPACE,
            batch_dataset_name(batch_id),
            inputFacets={
                "inputStatistics": ol.InputStatistics(rowCount=sum((per_batch.get(batch_id) or {}).values()))
            },
        )
        for batch_id in manifest.get("batch_ids") or []
    ]
    outputs = [_file_output(ol, file) for file in manifest.get("files") or []]
    facet = ol.ResultsFacet(
        batchIds=list(manifest.get("batch_ids") or []),
        counts=dict(manifest.get("counts") or {}),
        destination=str(manifest.get("destination") or ""),
    )
    return ol.OperatorLineage(inputs=inputs, outputs=outputs, run_facets={RESULTS_FACET_KEY: facet})


def _file_output(ol: Any, file: Mapping[str, Any]) -> Any:
    statistics = ol.OutputStatistics(rowCount=int(file.get("results") or 0), size=file.get("bytes"))
    return ol.OutputDataset(*uri_dataset(str(file["uri"])), outputFacets={"outputStatistics": statistics})


@functools.cache
def _openlineage() -> Any:
    """The OpenLineage classes this module uses (facets defined on first use), or None if absent."""
    try:
        import attr
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.facet_v2 import (
            RunFacet,
            input_statistics_input_dataset,
            output_statistics_output_dataset,
        )
    except ImportError:
        return None

    @attr.define
    class AnthropicBatchRunFacet(RunFacet):  # type: ignore[misc]
        """What a create task submitted: models (requests per model), request count, batches, outcomes."""

        models: dict[str, int] = attr.field(factory=dict)
        requestCount: int = attr.field(default=0)
        batchIds: list[str] = attr.field(factory=list)
        requestCounts: dict[str, int] = attr.field(factory=dict)

    @attr.define
    class AnthropicBatchResultsRunFacet(RunFacet):  # type: ignore[misc]
        """What a transfer wrote: the batches read, results per type, the destination prefix."""

        batchIds: list[str] = attr.field(factory=list)
        counts: dict[str, int] = attr.field(factory=dict)
        destination: str = attr.field(default="")

    return SimpleNamespace(
        OperatorLineage=OperatorLineage,
        InputDataset=InputDataset,
        OutputDataset=OutputDataset,
        InputStatistics=input_statistics_input_dataset.InputStatisticsInputDatasetFacet,
        OutputStatistics=output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
        BatchFacet=AnthropicBatchRunFacet,
        ResultsFacet=AnthropicBatchResultsRunFacet,
    )
