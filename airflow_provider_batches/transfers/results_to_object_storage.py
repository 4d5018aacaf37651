"""AnthropicBatchResultsToObjectStorageOperator: batch results streamed, verified, then published.

Results go from each batch's ``results_url`` to any Airflow object storage (``file://``, ``s3://``,
``gs://``...) in bounded memory. Every line is checked while it streams (valid JSON, a custom_id
seen once, counts per result type equal to the batch's ``request_counts``); files are staged and
only published once complete and verified, and ``_manifest.json`` is written last.

This module is the task (re-runs, download retries, the manifest); the line checks are
:mod:`.verification`'s, the hot path :mod:`.writer`'s and staged publishing :mod:`._publish`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import Asset, BaseOperator, Context, ObjectStoragePath

from airflow_provider_batches import models
from airflow_provider_batches._compat import AirflowFailException, moved_names
from airflow_provider_batches.batch_ids import normalize_batch_ids
from airflow_provider_batches.errors import AnthropicBatchesError, APIConnectionError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.lineage import results_transfer_lineage
from airflow_provider_batches.models import MessageBatch
from airflow_provider_batches.proof import manifest_proofs
from airflow_provider_batches.spend import (
    TOKEN_FIELDS,
    Spend,
    UsageMeter,
    describe_spend,
    emit_metrics,
    estimate_of,
)
from airflow_provider_batches.structured_output import OutputSchema, StructuredOutput
from airflow_provider_batches.transfers import verification, writer
from airflow_provider_batches.transfers._publish import (
    StagedFile,
    Staging,
    filesystem,
    remove_if_exists,
    uri_of,
)
from airflow_provider_batches.transfers.outputs import OutputFormat, OutputOptions, ResultOutputs
from airflow_provider_batches.transfers.parquet_writer import DEFAULT_ROW_GROUP_SIZE
from airflow_provider_batches.transfers.rounds import check_merged, round_ledgers, rounds_of
from airflow_provider_batches.transfers.verification import (
    BatchIdentity,
    expected_identities,
    parse_result_block,
    parse_result_line,
    unchecked_reason,
)
from airflow_provider_batches.transfers.writer import Route, copy_results

if TYPE_CHECKING:
    from airflow_provider_batches.transfers.verification import BatchLedger
    from airflow_provider_batches.transfers.writer import TransferProgress

__all__ = [
    "MANIFEST_NAME",
    "AnthropicBatchResultsToObjectStorageOperator",
    "DestinationConflictError",
    "parse_result_block",
    "parse_result_line",
]

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(
    __name__,
    {
        "RESULT_TYPES": "airflow_provider_batches.models",
        "BatchLedger": "airflow_provider_batches.transfers.verification",
        "ResultsVerificationError": "airflow_provider_batches.transfers.verification",
        "TransferProgress": "airflow_provider_batches.transfers.writer",
    },
)

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
#: Bytes per read from the results stream; None takes them as they arrive (no re-chunking copy).
CHUNK_SIZE: int | None = None

Compression = Literal["gzip"]


class DestinationConflictError(AnthropicBatchesError, AirflowFailException):
    """The destination holds another job's output and overwrite=False. Not retried: a setting must change."""


class AnthropicBatchResultsToObjectStorageOperator(BaseOperator):
    """Stream the results of one or more ended batches to object storage, verified, never partial.

    Writes ``<batch_id>.jsonl`` per batch, or with ``split_by_result_type`` one file per result type
    (``succeeded.jsonl``, ``errored.jsonl``, ``canceled.jsonl``, ``expired.jsonl``) holding the lines
    of every batch; ``.gz`` appended with ``compression="gzip"``. Then ``_manifest.json`` (batch ids,
    files, counts, bytes, sha256), which is also the XCom value. A prefix whose manifest exists is
    complete.

    :param batch_id: a batch id, a list of ids, or the create operator's manifest (templated).
    :param destination: an object storage URI prefix, e.g. ``s3://bucket/claude/{{ ds }}/`` (templated).
    :param dest_conn_id: the connection of the destination's filesystem (templated).
    :param conn_id: the Anthropic connection.
    :param split_by_result_type: one file per result type instead of one per batch.
    :param compression: ``"gzip"`` or None.
    :param overwrite: rewrite a complete output of the same inputs. When False, such an output is kept
        and its manifest returned, and a manifest of other inputs at the destination fails the task.
    :param download_retries: how many times an interrupted results download starts again.
    :param download_retry_delay: seconds before a retried download, times the attempt number.
    :param progress_interval: seconds between progress log lines.
    :param gzip_level: compression level for ``compression="gzip"`` (1 fastest, 9 smallest).
    :param output_format: ``"jsonl"`` (the lines as received) or ``"parquet"`` (flattened rows, see
        :mod:`airflow_provider_batches.transfers.rows`; needs the ``parquet`` extra).
    :param row_group_size: rows per Parquet row group (bounds the memory of the transfer).
    :param parquet_compression: the codec inside Parquet files (``zstd``, ``snappy``, ``none``...).
    :param output_schema: a Pydantic model class or JSON schema: succeeded answers are validated and
        added as ``parsed``; those that do not validate are listed in ``invalid_output.jsonl``.
    :param include_attempts: for a re-driven job (the create operator's manifest with ``rounds``), also
        publish every batch's raw results as ``attempt-round-<n>-<batch_id>.jsonl`` for audit; the
        main output holds one final result per custom_id either way.
    :param prices: USD per million tokens for models the price table lacks (as for count tokens).
    :param cost_estimate: the pre-flight estimate to report beside the actual cost: a number, or
        ``AnthropicCountTokensOperator``'s output (templated).
    """

    template_fields: Sequence[str] = ("batch_id", "destination", "dest_conn_id", "cost_estimate")
    ui_color = "#d4a27f"

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:  # type: ignore[override]
        """A mapped transfer is built only when it runs, after the batches were paid for: its output
        options (a missing ``pyarrow`` for Parquet...) are checked here, where the DAG is parsed."""
        known = ("output_format", "compression", "row_group_size", "parquet_compression")
        given = {name: kwargs[name] for name in known if name in kwargs}
        if all(isinstance(value, (str, int, type(None))) for value in given.values()):  # not templated
            OutputOptions(**given)
        return super().partial(**kwargs)

    def __init__(
        self,
        *,
        batch_id: str | Sequence[str] | dict[str, Any],
        destination: str | ObjectStoragePath,
        dest_conn_id: str | None = None,
        conn_id: str = AnthropicHook.default_conn_name,
        split_by_result_type: bool = False,
        compression: Compression | None = None,
        overwrite: bool = False,
        download_retries: int = 3,
        download_retry_delay: float = 5.0,
        progress_interval: float = 10.0,
        gzip_level: int = 6,
        output_format: OutputFormat = "jsonl",
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        parquet_compression: str = "zstd",
        output_schema: OutputSchema | None = None,
        include_attempts: bool = False,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        cost_estimate: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_options = OutputOptions(
            output_format=output_format,
            compression=compression,
            row_group_size=row_group_size,
            parquet_compression=parquet_compression,
            structured=None if output_schema is None else StructuredOutput.of(output_schema),
            prices=prices,
        )
        if compression not in (None, "gzip"):
            raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
        if download_retries < 0:
            raise ValueError("download_retries must not be negative")
        self.batch_id = batch_id
        self.destination = destination
        self.dest_conn_id = dest_conn_id
        self.conn_id = conn_id
        self.split_by_result_type = split_by_result_type
        self.compression = compression
        self.overwrite = overwrite
        self.download_retries = download_retries
        self.download_retry_delay = download_retry_delay
        self.progress_interval = progress_interval
        self.gzip_level = gzip_level
        self.include_attempts = include_attempts
        self.prices = prices
        self.cost_estimate = cost_estimate
        self._rounds: dict[str, int] = {}
        self._proofs: dict[str, str] = {}
        self._meters: dict[str, UsageMeter] = {}
        self._staging: Staging | None = None
        self._unchecked: dict[str, str] = {}

    @cached_property
    def hook(self) -> AnthropicHook:
        return AnthropicHook(conn_id=self.conn_id)

    # -- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        batch_ids = normalize_batch_ids(self.batch_id)
        expected = expected_identities(self.batch_id)
        self._unchecked = {
            batch_id: reason
            for batch_id in batch_ids
            if (reason := unchecked_reason(self.batch_id, expected, batch_id)) is not None
        }
        for batch_id, reason in self._unchecked.items():
            self.log.warning(
                "Batch %s: its results are checked for counts and unique custom_ids, not against the "
                "job's custom_ids: %s",
                batch_id,
                reason,
            )
        self._rounds = rounds_of(self.batch_id)
        self._proofs = manifest_proofs(self.batch_id)
        destination = self._destination_path()
        try:
            manifest = self._existing_manifest(destination, batch_ids)
            if manifest is None:
                batches = self._ended_batches(batch_ids)
                manifest = self._transfer(destination, batches, expected)
                if manifest.get("spend"):
                    ti = context.get("ti")
                    emit_metrics(
                        manifest["spend"],
                        dag_id=str(getattr(ti, "dag_id", self.dag_id)),
                        task_id=str(getattr(ti, "task_id", self.task_id)),
                    )
        finally:
            self.hook.close()
        if manifest.get("spend"):
            self.log.info("Spend: %s", describe_spend(manifest["spend"]))
        self._emit_asset_events(context, manifest)
        self._completed_manifest = manifest
        return manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the batches in, the written files out, with row counts (None without OpenLineage)."""
        return results_transfer_lineage(getattr(self, "_completed_manifest", None))

    def _destination_path(self) -> ObjectStoragePath:
        if isinstance(self.destination, ObjectStoragePath):
            if self.dest_conn_id is None:
                return self.destination
            return ObjectStoragePath(str(self.destination), conn_id=self.dest_conn_id)
        return ObjectStoragePath(self.destination, conn_id=self.dest_conn_id)

    def _ended_batches(self, batch_ids: list[str]) -> list[MessageBatch]:
        """Every batch, or a clear refusal naming each one not ready, before anything is written."""
        batches = [self.hook.get_batch(batch_id) for batch_id in batch_ids]
        self.hook.check_results_ready(batches)
        return batches

    # -- re-runs ----------------------------------------------------------------------------------

    def _existing_manifest(
        self, destination: ObjectStoragePath, batch_ids: list[str]
    ) -> dict[str, Any] | None:
        """The manifest of a complete output of these same inputs, when it may be kept (overwrite=False)."""
        if self.overwrite:
            return None
        manifest_path = destination / MANIFEST_NAME
        fs = filesystem(manifest_path)
        if not fs.exists(manifest_path.path):
            return None
        try:
            manifest = json.loads(fs.cat_file(manifest_path.path))
        except ValueError:
            self.log.warning("%s is not valid JSON; writing the output again", uri_of(manifest_path))
            return None
        same_inputs = (
            isinstance(manifest, dict)
            and manifest.get("batch_ids") == batch_ids
            and manifest.get("split_by_result_type") == self.split_by_result_type
            and manifest.get("compression") == self.compression
            and manifest.get("output_format", "jsonl") == self.output_options.output_format
            and manifest.get("output_schema") == self.output_options.manifest_fields()["output_schema"]
        )
        if not same_inputs:
            raise DestinationConflictError(
                f"{uri_of(destination)} already holds the output of other inputs (see {MANIFEST_NAME}); "
                "overwrite=False keeps it. Choose another destination or set overwrite=True."
            )
        missing = [
            entry.get("name")
            for entry in manifest.get("files", [])
            if not _has_size(destination / str(entry.get("name")), entry.get("bytes"))
        ]
        if missing:
            self.log.warning(
                "Existing output is incomplete (%s); writing it again", ", ".join(map(str, missing))
            )
            return None
        self.log.info("%s already holds these results (%s); skipping", uri_of(destination), MANIFEST_NAME)
        return manifest  # type: ignore[no-any-return]

    # -- transfer ---------------------------------------------------------------------------------

    def _transfer(
        self,
        destination: ObjectStoragePath,
        batches: list[MessageBatch],
        expected: Mapping[str, BatchIdentity],
    ) -> dict[str, Any]:
        started_at = datetime.now(timezone.utc)
        progress = writer.TransferProgress(self.log, self.progress_interval)
        staging = Staging(destination, gzip_level=self.gzip_level if self.compression == "gzip" else None)
        outputs = ResultOutputs(staging, self.output_options)
        self._staging = staging
        merged = None
        if self._rounds:  # a re-driven job: last round first, one final result per custom_id
            ledgers, merged = round_ledgers(batches, expected, self._rounds, self._proofs)
        else:
            ledgers = [
                verification.BatchLedger(batch, expected.get(batch.id), self._proofs.get(batch.id))
                for batch in batches
            ]
        file_counts: dict[str, dict[str, int]] = {}
        try:
            if self.split_by_result_type:
                self._write_split(outputs, ledgers, progress, file_counts)
            else:
                self._write_per_batch(outputs, ledgers, progress, file_counts)
            file_counts.update(outputs.finish())
            merged_identity = check_merged(ledgers, expected, self._rounds, merged) if merged else None
            self._close_attempts(staging, ledgers, file_counts)
            self.log.info("Downloaded and verified %d batch(es): %s", len(batches), progress.summary())
            remove_if_exists(destination / MANIFEST_NAME)  # a prefix with a manifest is always consistent
            for name in file_counts:
                staging.publish(name)
            manifest = self._manifest(destination, batches, ledgers, staging, file_counts, started_at)
            manifest.update(outputs.manifest_fields())
            manifest["spend"] = self._spend(batches)
            if merged_identity is not None:
                manifest["rounds"] = self._rounds_summary(ledgers, merged_identity)
            staging.write_json(MANIFEST_NAME, manifest)
            staging.publish(MANIFEST_NAME)
        except BaseException:
            staging.discard()
            raise
        staging.remove_folder()
        self.log.info(
            "Published %d file(s) and %s to %s", len(file_counts), MANIFEST_NAME, uri_of(destination)
        )
        return manifest

    def _write_per_batch(
        self,
        outputs: ResultOutputs,
        ledgers: list[BatchLedger],
        progress: TransferProgress,
        file_counts: dict[str, dict[str, int]],
    ) -> None:
        for ledger in ledgers:
            outputs.start_batch(ledger.batch.id, self._rounds.get(ledger.batch.id, 1))
            staged = outputs.open(ledger.batch.id)
            name = staged.name
            self._download(ledger, _always(staged), progress)
            staged.close()
            file_counts[name] = dict(ledger.published_counts)

    def _write_split(
        self,
        outputs: ResultOutputs,
        ledgers: list[BatchLedger],
        progress: TransferProgress,
        file_counts: dict[str, dict[str, int]],
    ) -> None:
        by_kind: dict[str, StagedFile] = {kind: outputs.open(kind) for kind in models.RESULT_TYPES}

        def route(kind: str) -> StagedFile:
            if kind not in by_kind:  # a result type newer than this code: it gets its own file
                by_kind[kind] = outputs.open(kind)
            return by_kind[kind]

        for ledger in ledgers:
            outputs.start_batch(ledger.batch.id, self._rounds.get(ledger.batch.id, 1))
            self._download(ledger, route, progress)
        for kind, staged in by_kind.items():
            staged.close()
            file_counts[staged.name] = {kind: sum(ledger.published_counts.get(kind, 0) for ledger in ledgers)}

    def _download(self, ledger: BatchLedger, route: Route, progress: TransferProgress) -> None:
        """Stream one batch into its output(s), starting again from the first byte if the stream breaks."""
        batch = ledger.batch
        attempts = self.download_retries + 1
        for attempt in range(1, attempts + 1):
            ledger.start_attempt()
            try:
                self._copy_once(ledger, route, progress)
            except APIConnectionError as exc:
                if attempt == attempts:
                    raise APIConnectionError(
                        f"the results download of batch {batch.id} failed {attempts} time(s); "
                        f"nothing was published. Last error: {exc}"
                    ) from exc
                delay = self.download_retry_delay * attempt
                self.log.warning(
                    "Results stream of %s broke off (%s); downloading again from the start in %.1f s "
                    "(attempt %d of %d)",
                    batch.id,
                    exc,
                    delay,
                    attempt + 1,
                    attempts,
                )
                time.sleep(delay)
                continue
            ledger.finish()
            self.log.info(
                "Batch %s: %d results verified (%s)", batch.id, ledger.results, _counts_text(ledger)
            )
            return

    def _copy_once(self, ledger: BatchLedger, route: Route, progress: TransferProgress) -> None:
        meter = UsageMeter(prices=self.prices)
        chunks = self.hook.iter_results_bytes(ledger.batch, chunk_size=CHUNK_SIZE)
        if self.include_attempts and self._rounds and self._staging is not None:
            chunks = self._tee_attempt(self._staging, ledger, chunks)
        copy_results(chunks, ledger, route, progress, meter)
        self._meters[ledger.batch.id] = meter  # the last complete attempt's usage

    # -- rounds and spend -------------------------------------------------------------------------

    def _attempt_name(self, ledger: BatchLedger) -> str:
        """Raw results as received (JSONL, gzip when asked), whatever the output format."""
        stem = f"attempt-round-{self._rounds.get(ledger.batch.id, 1)}-{ledger.batch.id}"
        return self.output_options.jsonl_name(stem)

    def _tee_attempt(self, staging: Staging, ledger: BatchLedger, chunks: Any) -> Any:
        """The raw results, also written to the batch's audit file (started again with each attempt)."""
        name = self._attempt_name(ledger)
        if name in staging.files:
            staging.files[name].abort()
        staged = staging.open(name)
        for chunk in chunks:
            staged.write(chunk)
            yield chunk

    def _close_attempts(
        self, staging: Staging, ledgers: list[BatchLedger], file_counts: dict[str, dict[str, int]]
    ) -> None:
        if not (self.include_attempts and self._rounds):
            return
        for ledger in ledgers:
            name = self._attempt_name(ledger)
            staging.files[name].close()
            file_counts[name] = dict(ledger.counts)

    def _spend(self, batches: list[MessageBatch]) -> dict[str, Any]:
        spend = Spend(self.prices)
        for batch in batches:
            spend.add(self._rounds.get(batch.id, 1), self._meters[batch.id])
        return spend.report(estimate_of(self.cost_estimate))

    def _rounds_summary(self, ledgers: list[BatchLedger], merged: Any) -> dict[str, Any]:
        """Per round: its batches, their counts, and how many of its results later rounds superseded."""
        rounds: dict[str, dict[str, Any]] = {}
        for ledger in sorted(ledgers, key=lambda item: getattr(item, "round_number", 1)):
            entry = rounds.setdefault(
                str(getattr(ledger, "round_number", 1)), {"batch_ids": [], "counts": {}, "superseded": 0}
            )
            entry["batch_ids"].append(ledger.batch.id)
            for kind, count in ledger.counts.items():
                entry["counts"][kind] = entry["counts"].get(kind, 0) + count
            entry["superseded"] += getattr(ledger, "superseded", 0)
        return {"merged": {**merged.to_json(), "checked": True}, "per_round": rounds}

    # -- outputs ----------------------------------------------------------------------------------

    def _manifest(
        self,
        destination: ObjectStoragePath,
        batches: list[MessageBatch],
        ledgers: list[BatchLedger],
        staging: Staging,
        file_counts: dict[str, dict[str, int]],
        started_at: datetime,
    ) -> dict[str, Any]:
        totals: dict[str, int] = dict.fromkeys(models.RESULT_TYPES, 0)
        for ledger in ledgers:
            for kind, count in ledger.published_counts.items():
                totals[kind] = totals.get(kind, 0) + count
        files = [
            {
                "name": name,
                "uri": uri_of(destination / name),
                "results": sum(counts.values()),
                "counts": counts,
                "bytes": staging.files[name].size,
                "sha256": staging.files[name].sha256,
            }
            for name, counts in file_counts.items()
        ]
        return {
            "manifest_version": MANIFEST_VERSION,
            "destination": uri_of(destination),
            "batch_ids": [batch.id for batch in batches],
            "split_by_result_type": self.split_by_result_type,
            "compression": self.compression,
            "files": files,
            "batches": {ledger.batch.id: dict(ledger.counts) for ledger in ledgers},
            # What each batch's results carried; "checked" when it matched the job's own record, and
            # why not when it could not be.
            "custom_ids": {
                ledger.batch.id: {
                    **(ledger.identity.to_json() if ledger.identity else {}),
                    "checked": ledger.expected is not None,
                    **(
                        {"not_checked_because": self._unchecked.get(ledger.batch.id, "unknown")}
                        if ledger.expected is None
                        else {}
                    ),
                }
                for ledger in ledgers
            },
            "counts": totals,
            "results": sum(totals.values()),
            # The proof requests the create operator added (one per batch; their lines are not
            # published, their tokens are in "spend"): per batch, how each ended.
            "proof_requests": {
                ledger.batch.id: ledger.proof_kind for ledger in ledgers if ledger.proof_kind is not None
            },
            "bytes": sum(staging.files[name].size for name in file_counts),
            "started_at": started_at.isoformat(),
            "written_at": datetime.now(timezone.utc).isoformat(),
        }

    def _emit_asset_events(self, context: Context, manifest: dict[str, Any]) -> None:
        """Put the counts in the extra of the asset event of every Asset outlet."""
        outlets = [outlet for outlet in self.outlets if isinstance(outlet, Asset)]
        if not outlets:
            return
        extra = {
            "destination": manifest["destination"],
            "manifest": f"{manifest['destination']}/{MANIFEST_NAME}",
            "batch_ids": manifest["batch_ids"],
            "counts": manifest["counts"],
            "results": manifest["results"],
            "bytes": manifest["bytes"],
        }
        if manifest.get("spend"):
            spend = manifest["spend"]
            extra["spend"] = {
                key: spend[key]
                for key in (
                    "cost_usd",
                    "billed_cost_usd",
                    "estimated_cost_usd",
                    "unpriced_models",
                    *TOKEN_FIELDS,
                )
                if key in spend
            }
        for asset in outlets:
            context["outlet_events"][asset].extra.update(extra)


def _always(staged: StagedFile) -> Route:
    """The route of per-batch mode: every result type goes to the batch's one file."""
    return lambda _kind: staged


def _has_size(path: ObjectStoragePath, size: Any) -> bool:
    try:
        return isinstance(size, int) and filesystem(path).size(path.path) == size
    except FileNotFoundError:
        return False


def _counts_text(ledger: BatchLedger) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in ledger.counts.items())
