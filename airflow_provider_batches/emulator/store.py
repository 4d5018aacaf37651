"""Batches on disk: metadata as small JSON files, requests and results as JSONL spool files.

Memory per batch is one small record; per-request data lives only in files:

* ``<id>.json``           the BatchRecord (rewritten atomically on each state change)
* ``<id>.requests.jsonl`` the validated requests, one per line, in submission order
* ``<id>.codes``          one byte per request: its planned outcome (see answers.OUTCOME_CODES)
* ``<id>.results.jsonl``  written in a worker thread when the batch ends, streamed from disk

With a ``data_dir`` all of this survives restarts; without one a temporary directory is removed on close.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from airflow_provider_batches.emulator import lifecycle
from airflow_provider_batches.emulator.answers import canonical_json, is_transient_marked, plan_outcome
from airflow_provider_batches.emulator.apierrors import ApiError, invalid_request, not_found
from airflow_provider_batches.emulator.config import EmulatorConfig
from airflow_provider_batches.emulator.ids import new_batch_id, random_base62
from airflow_provider_batches.emulator.lifecycle import BatchRecord
from airflow_provider_batches.emulator.results import iter_result_lines
from airflow_provider_batches.emulator.spool import (
    MalformedJson,
    NeedsGeneralReader,
    iter_batch_requests,
    iter_request_elements,
)
from airflow_provider_batches.emulator.validation import check_batch_item

SPOOL_SUFFIXES = (".requests.jsonl", ".results.jsonl", ".results.jsonl.tmp")
ALL_SUFFIXES = (".json", ".codes", *SPOOL_SUFFIXES)
WRITE_CHUNK_BYTES = 1 << 20


def owner_of(api_key: str) -> str:
    """Batches belong to a hash of the API key: isolation without writing keys to disk."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:32]


class BatchStore:
    """All batches of all keys; thread-safe (handlers run on the event loop, parsing in worker threads)."""

    def __init__(self, data_dir: Path | None) -> None:
        self._temporary = data_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="anthropic-emulator-")) if data_dir is None else data_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self._incoming = self.root / "incoming"
        self._incoming.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._records: dict[str, BatchRecord] = {}
        self._results: dict[str, concurrent.futures.Future[Path]] = {}
        self._writer = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="emulator-results"
        )
        self._next_seq = 1
        #: Submissions so far of each request whose outcome depends on its attempt (a transient
        #: marker), keyed by a hash of (owner, custom_id, params); kept in ``attempts.json``.
        self._attempts: dict[str, int] = {}
        self._load()

    # -- files -------------------------------------------------------------------------------------

    def _path(self, batch_id: str, suffix: str) -> Path:
        return self.root / f"{batch_id}{suffix}"

    def _load(self) -> None:
        attempts = self.root / "attempts.json"
        if attempts.exists():
            self._attempts = json.loads(attempts.read_text("utf-8"))
        for meta in sorted(self.root.glob("msgbatch_*.json")):
            record = BatchRecord.from_json(json.loads(meta.read_text("utf-8")))
            self._records[record.id] = record
            self._next_seq = max(self._next_seq, record.seq + 1)

    def _save(self, record: BatchRecord) -> None:
        target = self._path(record.id, ".json")
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(record.to_json()), "utf-8")
        os.replace(temporary, target)

    def _remove_files(self, batch_id: str) -> None:
        for suffix in ALL_SUFFIXES:
            self._path(batch_id, suffix).unlink(missing_ok=True)

    def new_body_path(self) -> Path:
        """Where a create-batch body is spooled before parsing."""
        return self._incoming / f"{random_base62(16)}.body"

    def close(self) -> None:
        self._writer.shutdown(wait=True, cancel_futures=True)
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def clear(self) -> None:
        """Forget every batch (admin reset)."""
        with self._lock:
            batch_ids = list(self._records)
            self._records.clear()
            self._attempts.clear()
            (self.root / "attempts.json").unlink(missing_ok=True)
        for batch_id in batch_ids:
            self._discard_when_written(batch_id)

    # -- create ------------------------------------------------------------------------------------

    def create(self, owner: str, body_path: Path, config: EmulatorConfig, now: float) -> BatchRecord:
        """Parse and validate a spooled body into a new batch (blocking: call from a worker thread)."""
        batch_id = self._unused_batch_id()
        requests_path = self._path(batch_id, ".requests.jsonl")
        try:
            with body_path.open("rb") as body, requests_path.open("wb") as out:
                attempts: dict[str, int] = {}

                def spool(items: Iterator[tuple[Any, bytes | None]]) -> tuple[bytes, list[str]]:
                    return self._spool_requests(
                        items, out, config, lambda c, p: self._attempt(owner, c, p, attempts)
                    )

                try:
                    codes, unknown_models = spool(iter_request_elements(body))
                except NeedsGeneralReader:  # the general reader says what is wrong, or reads what json may
                    out.seek(0)
                    out.truncate()
                    attempts.clear()
                    body.seek(0)
                    codes, unknown_models = spool((item, None) for item in iter_batch_requests(body))
            self._path(batch_id, ".codes").write_bytes(codes)
        except MalformedJson as exc:
            self._remove_files(batch_id)
            raise invalid_request(f"body: invalid JSON: {exc}") from None
        except BaseException:
            self._remove_files(batch_id)
            raise
        finally:
            body_path.unlink(missing_ok=True)
        with self._lock:
            try:
                self._check_queue(owner, len(codes), config.max_queued_requests, now)
            except ApiError:
                self._remove_files(batch_id)
                raise
            record = BatchRecord(
                id=batch_id,
                seq=self._next_seq,
                owner=owner,
                request_count=len(codes),
                created_at=now,
                expires_at=now + config.expiry_seconds,
                archive_at=now + config.archive_seconds,
                processing_seconds=config.processing_seconds,
                canceling_seconds=config.canceling_seconds,
                plan_seed=config.seed,
                errored_fraction=config.errored_fraction,
                errored_type=config.errored_type,
                unknown_models=unknown_models,
            )
            self._next_seq += 1
            self._records[batch_id] = record
            self._save(record)
        self._count_attempts(attempts)  # only a batch that was made counts as an attempt
        return record

    def _check_queue(self, owner: str, request_count: int, limit: int | None, now: float) -> None:
        """429 when the key's processing queue would exceed ``limit`` requests (no batch is made)."""
        if limit is None:
            return
        queued = sum(
            record.request_count
            for record in self._records.values()
            if record.owner == owner and not lifecycle.has_ended_by(record, now)
        )
        if queued + request_count > limit:
            raise ApiError(
                429,
                "rate_limit_error",
                f"processing queue full: {queued} requests are processing and this batch adds "
                f"{request_count}; the limit is {limit}. No batch was created.",
                {"retry-after": "60"},
            )

    def _unused_batch_id(self) -> str:
        while True:
            batch_id = new_batch_id()
            if batch_id not in self._records and not self._path(batch_id, ".json").exists():
                return batch_id

    def _attempt(self, owner: str, custom_id: str, params: dict[str, Any], seen: dict[str, int]) -> int:
        """Which attempt of this request a create is (1 for the first); counted only for transient markers."""
        if not is_transient_marked(params):
            return 1
        key = hashlib.sha256(canonical_json([owner, custom_id, params]).encode()).hexdigest()[:32]
        with self._lock:
            seen[key] = self._attempts.get(key, 0) + 1
        return seen[key]

    def _count_attempts(self, attempts: dict[str, int]) -> None:
        """Only a batch that was created counts as an attempt of its requests."""
        if not attempts:
            return
        with self._lock:
            self._attempts.update(attempts)
            target = self.root / "attempts.json"
            target.with_suffix(".tmp").write_text(json.dumps(self._attempts), "utf-8")
            os.replace(target.with_suffix(".tmp"), target)

    @staticmethod
    def _spool_requests(
        items: Iterator[tuple[Any, bytes | None]],
        out: BinaryIO,
        config: EmulatorConfig,
        attempt_of: Any = None,
    ) -> tuple[bytes, list[str]]:
        """Validate each request, write it as one JSONL line; return the planned-outcome codes and
        the models not in the catalogue (their requests end ``errored`` with ``not_found_error``).
        ``items``: each request with its JSON text on one line, or None to encode it here.
        ``attempt_of(custom_id, params)`` says which attempt of a transient-marked request this is."""
        codes = bytearray()
        first_seen: dict[str, int] = {}
        catalogue = frozenset(config.models)
        unknown: set[str] = set()
        limit = config.max_batch_requests
        pending: list[bytes] = []
        size = 0
        for index, (item, line) in enumerate(items):
            if index >= limit:
                raise invalid_request(f"requests: List should have at most {limit} items after validation")
            custom_id, params = check_batch_item(item, index, first_seen)
            if params["model"] not in catalogue:
                unknown.add(params["model"])
            plan = plan_outcome(
                custom_id,
                params,
                seed=config.seed,
                errored_fraction=config.errored_fraction,
                errored_type=config.errored_type,
                known_model=params["model"] in catalogue,
                attempt=attempt_of(custom_id, params) if attempt_of is not None else 1,
            )
            codes += plan.code
            if line is None:
                try:
                    line = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\ud800"
                    surrogate = exc.object[exc.start]
                    raise invalid_request(
                        f"body: invalid JSON: lone surrogate {surrogate!r} in a string of requests.{index}"
                    ) from None
            pending += (line, b"\n")
            size += len(line)
            if size >= WRITE_CHUNK_BYTES:
                out.write(b"".join(pending))
                pending, size = [], 0
        out.write(b"".join(pending))
        if not codes:
            raise invalid_request("requests: List should have at least 1 item after validation, not 0")
        return bytes(codes), sorted(unknown)

    # -- read and change ---------------------------------------------------------------------------

    def get(self, owner: str, batch_id: str, now: float) -> BatchRecord:
        """The batch, brought up to date with the clock; 404 for unknown ids and other keys' batches."""
        with self._lock:
            record = self._owned(owner, batch_id)
            self._refresh(record, now)
            return record

    def _owned(self, owner: str, batch_id: str) -> BatchRecord:
        """The batch if ``owner`` (an API key) created it; 404 otherwise, as for an unknown id."""
        record = self._records.get(batch_id)
        if record is None or record.owner != owner:
            raise not_found(f"message_batch_id: no batch with id '{batch_id}'")
        return record

    def _refresh(self, record: BatchRecord, now: float) -> None:
        """Apply whatever the clock says has happened (end, archive) since the last access."""
        if record.ended_at is None:
            plan = lifecycle.end_plan(record)
            if now >= plan.ended_at:
                codes = self._path(record.id, ".codes").read_bytes()
                record.ended_at = plan.ended_at
                record.cutoff = plan.cutoff
                record.cutoff_outcome = plan.cutoff_outcome
                record.counts = lifecycle.final_counts(codes, plan.cutoff, plan.cutoff_outcome)
                self._save(record)
                self._schedule_results(record)
        if lifecycle.is_archived(record, now):
            self._discard_when_written(record.id, SPOOL_SUFFIXES)

    def settle(self, now: float) -> int:
        """Apply the clock to every batch at once (admin): end what is due, as a real API does on its
        own, so a benchmark's poller is not charged for the emulator's lazy ends. Returns how many ended."""
        with self._lock:
            ended = 0
            for record in self._records.values():
                before = record.ended_at
                self._refresh(record, now)
                ended += before is None and record.ended_at is not None
            return ended

    def cancel(self, owner: str, batch_id: str, now: float) -> BatchRecord:
        """Start canceling; 400 once the batch has ended. Canceling twice is harmless."""
        with self._lock:
            record = self._owned(owner, batch_id)
            if record.processing_seconds > 0 or record.cancel_initiated_at is not None:
                self._refresh(record, now)  # instant clock: a cancel is not a read, so it does not end it
            if record.ended_at is not None:
                raise invalid_request(f"Batch '{batch_id}' has already ended and cannot be canceled.")
            if record.cancel_initiated_at is None:
                record.cancel_initiated_at = now
                self._save(record)
            return record

    def delete(self, owner: str, batch_id: str, now: float) -> None:
        """Forget an ended batch and its files; 400 while it is still processing."""
        with self._lock:
            record = self._owned(owner, batch_id)
            self._refresh(record, now)
            if record.ended_at is None:
                raise invalid_request(
                    f"Batch '{batch_id}' is still {lifecycle.processing_status(record)}; "
                    "only ended batches can be deleted (cancel it first)."
                )
            del self._records[batch_id]
        self._discard_when_written(batch_id)

    def page(
        self, owner: str, now: float, *, before_id: str | None, after_id: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        """One page of the key's batches, newest first by creation sequence; returns (page, has_more)."""
        with self._lock:
            mine = sorted((r for r in self._records.values() if r.owner == owner), key=lambda r: -r.seq)
            upper = self._cursor_seq(mine, before_id, "before_id")
            lower = self._cursor_seq(mine, after_id, "after_id")
            window = [
                r for r in mine if (upper is None or r.seq > upper) and (lower is None or r.seq < lower)
            ]
            if before_id is not None and after_id is None:
                page = window[-limit:]  # the items just before the cursor, still newest first
                has_more = len(window) > limit
            else:
                page = window[:limit]
                has_more = len(window) > limit
            for record in page:
                self._refresh(record, now)
            return page, has_more

    @staticmethod
    def _cursor_seq(records: list[BatchRecord], cursor: str | None, name: str) -> int | None:
        if cursor is None:
            return None
        for record in records:
            if record.id == cursor:
                return record.seq
        raise invalid_request(f"{name}: no batch with id '{cursor}'")

    # -- results -----------------------------------------------------------------------------------

    def results_file(
        self, owner: str, batch_id: str, now: float, config: EmulatorConfig
    ) -> concurrent.futures.Future[Path]:
        """A future for the results file of an ended, unarchived batch (answers the open points by config)."""
        with self._lock:
            record = self._owned(owner, batch_id)
            self._refresh(record, now)
            if record.ended_at is None:
                status = config.results_before_end_status
                error_type = "invalid_request_error" if status == 400 else "not_found_error"
                raise ApiError(
                    status, error_type, f"Batch '{batch_id}' has not ended yet; results are not ready."
                )
            if lifecycle.is_archived(record, now):
                status = config.results_after_archive_status
                error_type = "not_found_error" if status == 404 else "invalid_request_error"
                raise ApiError(status, error_type, f"Batch '{batch_id}' is archived; its results are gone.")
            return self._schedule_results(record)

    def _schedule_results(self, record: BatchRecord) -> concurrent.futures.Future[Path]:
        future = self._results.get(record.id)
        if future is None:
            future = self._writer.submit(self._write_results, record)
            self._results[record.id] = future
        return future

    def _write_results(self, record: BatchRecord) -> Path:
        """Turn the request spool into the results file (worker thread; streaming, bounded memory)."""
        target = self._path(record.id, ".results.jsonl")
        if target.exists():
            return target
        codes = self._path(record.id, ".codes").read_bytes()
        temporary = self._path(record.id, ".results.jsonl.tmp")
        source_path = self._path(record.id, ".requests.jsonl")
        with source_path.open("rb") as source, temporary.open("wb") as out:
            pending: list[bytes] = []
            size = 0
            for line in iter_result_lines(record, codes, source):
                pending.append(line)
                size += len(line)
                if size >= WRITE_CHUNK_BYTES:  # one write per megabyte or so, not one per line
                    out.write(b"".join(pending))
                    pending, size = [], 0
            out.write(b"".join(pending))
        os.replace(temporary, target)
        return target

    def _discard_when_written(self, batch_id: str, suffixes: tuple[str, ...] = ALL_SUFFIXES) -> None:
        """Remove a batch's files, after its results writer (if any) has finished with them."""
        future = self._results.pop(batch_id, None)

        def remove(_done: object) -> None:
            for suffix in suffixes:
                self._path(batch_id, suffix).unlink(missing_ok=True)

        if future is None:
            remove(None)
        else:
            future.add_done_callback(remove)
