"""The rounds of a job: what each one sends, what the next one sends again, the final outcome.

Every round is a :class:`~airflow_provider_batches.job_state.RoundRecord`, recorded before any of its
creates: round 1 sends the whole input; each later round is computed from the ended round's results,
streamed (only the failing custom_ids are kept), and its requests are the *original* lines of the
input for those custom_ids, read only from the first round's batches that hold them (their offsets
and digests are on the record: :func:`~airflow_provider_batches.requests.prepare_subset`), split by
the same limits. Computing a round again gives the same round, so a retry that finds it recorded
re-attaches instead of sending it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_batches._compat import moved_names
from airflow_provider_batches.errors import APIConnectionError, BatchCanceledError, InputChangedError
from airflow_provider_batches.job_state import JobRecord, RoundKind, RoundRecord, utcnow
from airflow_provider_batches.policy import total_counts
from airflow_provider_batches.redrive import Redrive, Selection, select_retryable
from airflow_provider_batches.requests import (
    PreparedJob,
    RequestSource,
    SourceSpan,
    prepare_job,
    prepare_subset,
)

if TYPE_CHECKING:
    from logging import Logger

    from airflow_provider_batches.hooks.anthropic import AnthropicHook

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(__name__, {"rounds_manifest": "airflow_provider_batches.operators.manifest"})

#: Times a broken results stream is read again from the start while selecting what to re-drive.
SELECTION_ATTEMPTS = 3

OnExternalCancel = Literal["fail", "resume"]
ON_EXTERNAL_CANCEL_CHOICES: tuple[str, ...] = ("fail", "resume")
#: What a canceled batch did not finish: sent again by the round that resumes it.
UNFINISHED_KINDS = ("canceled", "expired")


def wait_label(current: RoundRecord, waiting: list[str]) -> str:
    """What a wait's progress lines say it is for: the round and, when the round is sent in waves
    (``max_requests_in_flight``, a full queue), which of its batches are in flight."""
    slices = current.slices
    label = f"round {current.number}"
    created = len(slices) - current.unsubmitted
    if created < len(slices) or len(waiting) < created:
        ended = sum(1 for part in slices if part.ended_counts is not None)
        label += f", wave: {len(waiting)} batch(es) in flight, {ended} of {len(slices)} ended"
    return label


def check_input_unchanged(record: JobRecord, job: PreparedJob, number: int) -> None:
    """The input read again must be the one the job started with (fingerprint and split): every queue
    wave and every round checks it before its paid calls, as a retry does, so an edited line is never
    sent (nor its answer published under the first fingerprint)."""
    if not record.matches(job):
        raise _input_changed(
            record, number, f"fingerprint {record.fingerprint[:16]}, now {job.fingerprint[:16]}"
        )


def _input_changed(record: JobRecord, number: int, how: str) -> InputChangedError:
    recorded = number <= len(record.rounds)
    unsent = (
        f"{record.round(number).unsubmitted} slice(s) were not sent (round {number})"
        if recorded
        else f"round {number} was not sent"
    )
    return InputChangedError(
        f"the input changed while the job ran ({how}); {unsent}. Batches of the job "
        f"so far: {', '.join(record.all_batch_ids) or 'none'}. Restore the input and retry the task to go "
        "on, or set on_input_change='cancel_and_resubmit' to submit the new input as a new job."
    )


def source_spans(record: JobRecord) -> list[SourceSpan] | None:
    """Where each batch of the first round lies in the input, from the record; None for a record of
    an earlier version, which kept no offsets."""
    slices = record.round(1).slices
    spans: list[SourceSpan] = []
    start = 0
    for index, part in enumerate(slices):
        if part.offset is None or part.first_line is None:
            return None
        end = slices[index + 1].offset if index + 1 < len(slices) else None
        spans.append(SourceSpan(index, start, part.count, part.offset, part.first_line, end, part.sha256))
        start += part.count
    return spans


def spans_holding(record: JobRecord, number: int, batch_ids: Collection[str]) -> list[SourceSpan] | None:
    """The first round's spans that hold the requests of round ``number``'s batches ``batch_ids``: all a
    follow-up round of them reads. None when the record cannot tell (written by an earlier version)."""
    spans = source_spans(record)
    if spans is None:
        return None
    needed: set[int] = set()
    ended = record.round(number)
    for index, part in enumerate(ended.slices):
        if part.batch_id not in batch_ids:
            continue
        if ended.kind == "first":
            needed.add(index)
        elif part.origins is None:
            return None
        else:
            needed.update(part.origins)
    return [spans[index] for index in sorted(needed)]


def check_cancel_resumable(
    record: JobRecord, batch_id: str, canceled_at: Any, on_external_cancel: str, log: Logger
) -> None:
    """The one rule for a canceled batch of the job: its finished results are kept and its unfinished
    requests are sent again in a follow-up round when the job canceled it itself (the cancel is on its
    record) or ``on_external_cancel="resume"``; otherwise nobody's cancel is overridden and this raises
    :class:`BatchCanceledError` naming it."""
    own = record.own_cancels.get(batch_id)
    if own is not None:
        log.warning(
            "Batch %s was canceled by this job (%s, at %s): its finished results are kept; its unfinished "
            "requests are sent again in a follow-up round once it has ended",
            batch_id,
            own.get("reason"),
            own.get("at"),
        )
        return
    if on_external_cancel == "resume":
        log.warning(
            "Batch %s was canceled at %s, not by this job: on_external_cancel='resume' sends its unfinished "
            "requests again in a follow-up round once it has ended (its finished results are kept)",
            batch_id,
            canceled_at,
        )
        return
    raise BatchCanceledError(
        f"batch {batch_id} of this job was canceled at {canceled_at}, not by this job (its record holds no "
        "cancel of it): who or what canceled it is unknown (a person in the console or through the API, "
        "another program using the key, or a kill of the deferred task on Airflow 3.3+, whose trigger "
        "cancels without a record). The cancel is not overridden and nothing was sent. To finish the job "
        "anyway, set on_external_cancel='resume' and retry the task: only the requests the batch did not "
        "finish are sent again, its finished results are kept.",
        [batch_id],
    )


class _Resume:
    """The next round's reasons: the unfinished requests of the resumed (canceled) batches, and what
    the re-drive policy (if a round is left for it) sends again from every batch."""

    def __init__(self, redrive: Redrive | None, resumed: bool) -> None:
        self.redrive = redrive
        self.resumed = resumed

    def reason(self, kind: str, error_type: str | None) -> str | None:
        if self.resumed and kind in UNFINISHED_KINDS:
            return f"{kind}:resumed"
        return self.redrive.reason(kind, error_type) if self.redrive is not None else None


def sent_again(
    record: JobRecord, policy: Redrive | None, number: int, batch_id: str, kind: str, error_type: str | None
) -> bool:
    """Whether a failure of round ``number`` (in ``batch_id``) was sent again by the next round: the
    rule :meth:`JobRounds.job_of` rebuilds that round by (a resume round resends only its resumed
    batches' unfinished requests; a re-drive round, what ``policy`` selects)."""
    if number >= len(record.rounds):
        return False
    following = record.round(number + 1)
    redrive = policy if following.kind == "redrive" else None
    return _Resume(redrive, batch_id in following.resumed_batches).reason(kind, error_type) is not None


def final_counts(record: JobRecord) -> dict[str, int] | None:
    """Per result type, the job's outcome after every round: each request counted once, by its last
    answer. None while a round is still waiting."""
    final: dict[str, int] = {}
    for each in record.rounds:
        if each.ended_counts is None:
            return None
        for kind, count in total_counts(each.ended_counts).items():
            final[kind] = final.get(kind, 0) + count - (each.redriven or {}).get(kind, 0)
    return final


class JobRounds:
    """Plans a job's follow-up rounds from its source and the ended rounds' results: re-drive rounds
    (with a :class:`Redrive` policy) and resume rounds (the unfinished requests of canceled batches)."""

    def __init__(
        self,
        hook: AnthropicHook,
        policy: Redrive | None,
        source: Callable[[], RequestSource],
        *,
        max_requests: int,
        max_bytes: int,
        log: Logger,
        on_external_cancel: str = "fail",
    ) -> None:
        self.hook = hook
        self.policy = policy
        #: Read only when a round is planned (a decorated task's function runs to give it).
        self._source_of = source
        self._source: RequestSource | None = None
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.log = log
        self.on_external_cancel = on_external_cancel
        self._jobs: dict[int, PreparedJob] = {}

    def plan_next(self, record: JobRecord) -> RoundRecord | None:
        """Record on ``record`` what the ended round sends again; the next round (not yet saved), or
        None when nothing is left to send. No call unless a batch was canceled or a re-drive round is
        left."""
        ended = record.current
        resumed = self._canceled_batches(record, ended)
        redrive = self._redrive_left(record)
        if not resumed and redrive is None:
            return None
        selection, failed_in = self._select(ended.batch_ids, redrive, resumed)
        ended.redriven = selection.redriven_counts()
        if not selection.custom_ids:
            self.log.info("Round %d left nothing to send again", ended.number)
            return None
        number = ended.number + 1
        job = self._prepare(record, selection.custom_ids, number, failed_in)
        self._jobs[number] = job
        delay = self.policy.delay if self.policy is not None else 0.0
        not_before = (utcnow() + timedelta(seconds=delay)).isoformat() if delay else None
        resumes = all(reason.endswith(":resumed") for reason in selection.reasons)
        kind: RoundKind = "resume" if resumes else "redrive"
        self.log.info(
            "Sending %d request(s) of round %d again as round %d (%s), in %d batch(es)",
            job.request_count,
            ended.number,
            number,
            ", ".join(f"{count} {reason}" for reason, count in sorted(selection.reasons.items())),
            len(job.slices),
        )
        return RoundRecord.for_job(job, number, not_before=not_before, kind=kind, resumed_batches=resumed)

    def job_of(self, record: JobRecord, number: int) -> PreparedJob:
        """Round ``number``'s requests, read again (the input checked again) unless this step already
        did: the whole input for round 1, else what round ``number - 1``'s results give again."""
        if number not in self._jobs:
            planned = record.round(number)
            if planned.kind == "first":
                self._jobs[number] = self._prepare(record, None, number, ())
            else:
                redrive = self.policy if planned.kind == "redrive" else None
                before = record.round(number - 1).batch_ids
                selection, failed_in = self._select(before, redrive, planned.resumed_batches)
                self._jobs[number] = self._prepare(record, selection.custom_ids, number, failed_in)
        return self._jobs[number]

    def forget_input(self) -> None:
        """Time passed (a wait, a delay): the next round's requests are read and checked again."""
        self._jobs.clear()

    def _redrive_left(self, record: JobRecord) -> Redrive | None:
        """The re-drive policy, if it allows another round (resume rounds are not counted)."""
        if self.policy is None:
            return None
        used = sum(1 for each in record.rounds if each.kind != "resume")
        if used >= self.policy.max_rounds:
            self.log.info(
                "Round %d was the last re-drive allowed (max_rounds=%d)", used, self.policy.max_rounds
            )
            return None
        return self.policy

    def _canceled_batches(self, record: JobRecord, ended: RoundRecord) -> list[str]:
        """The round's batches that ended with canceled requests because the batch was canceled (one
        GET each; the emulator can also make single requests end canceled): the job's own cancels, and
        others' with ``on_external_cancel="resume"``; anyone else's cancel raises."""
        canceled = []
        for part in ended.slices:
            if part.batch_id is None or not (part.ended_counts or {}).get("canceled"):
                continue
            batch = self.hook.get_batch(part.batch_id)
            if batch.cancel_initiated_at is None:
                continue
            check_cancel_resumable(
                record, batch.id, batch.cancel_initiated_at, self.on_external_cancel, self.log
            )
            canceled.append(batch.id)
        return canceled

    @property
    def source(self) -> RequestSource:
        if self._source is None:
            self._source = self._source_of()
        return self._source

    def _prepare(
        self, record: JobRecord, custom_ids: set[str] | None, number: int, failed_in: Collection[str]
    ) -> PreparedJob:
        """The round's requests (None: the whole input). A later round's are read from the first
        round's batches that hold them (``failed_in``: the batches of round ``number - 1`` they failed
        in) and nowhere else: each of those batches' lines checked once and against its digest, so an
        edited input raises :class:`InputChangedError` before any create, and a line edited after it
        fails the body's own digest as it streams.

        Round 1, or a record of an earlier version (no offsets): the round's lines, then the whole
        input checked against the job's fingerprint."""
        subset = None
        if custom_ids is not None:
            spans = spans_holding(record, number - 1, failed_in)
            if spans is not None:
                try:
                    return prepare_subset(
                        self.source,
                        spans,
                        custom_ids,
                        max_requests=self.max_requests,
                        max_bytes=self.max_bytes,
                    )
                except InputChangedError as exc:
                    raise _input_changed(record, number, str(exc)) from None
            subset = prepare_job(
                self.source.subset(custom_ids), max_requests=self.max_requests, max_bytes=self.max_bytes
            )
        whole = prepare_job(self.source, max_requests=self.max_requests, max_bytes=self.max_bytes)
        check_input_unchanged(record, whole, number)
        return whole if subset is None else subset

    def _select(
        self, batch_ids: list[str], redrive: Redrive | None, resumed: Collection[str]
    ) -> tuple[Selection, list[str]]:
        """The custom_ids to send again from the round's batches, results streamed (a broken stream is
        read again from the start), and the batches they came from; a batch with nothing to give is
        not read."""
        total = Selection()
        failed_in: list[str] = []
        for batch_id in batch_ids:
            policy = _Resume(redrive, batch_id in resumed)
            if redrive is None and not policy.resumed:
                continue
            for attempt in range(1, SELECTION_ATTEMPTS + 1):
                selection = Selection()
                try:
                    select_retryable(policy, self.hook.iter_results_bytes(batch_id), selection)
                except APIConnectionError:
                    if attempt == SELECTION_ATTEMPTS:
                        raise
                    self.log.warning("Results stream of %s broke off; reading it again", batch_id)
                    continue
                break
            total.custom_ids |= selection.custom_ids
            total.reasons.update(selection.reasons)
            if selection.custom_ids:
                failed_in.append(batch_id)
        return total, failed_in
