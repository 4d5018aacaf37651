"""Exceptions raised by the provider: one class per API error type, plus client-side errors.

API errors carry what an operator on call needs (HTTP status, error type, request id) and a hint
that says what to do. None of them ever holds the API key: they are built from the response body
only, never from the request headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_batches._compat import AirflowException, AirflowFailException


class AnthropicBatchesError(AirflowException):
    """Base class of every error this provider raises."""


class AnthropicAPIError(AnthropicBatchesError):
    """The API answered with an error status. Subclasses name the error type."""

    status_code: int | None = None
    error_type: str = "api_error"
    hint: str = ""
    #: No retry can change this answer: it is never retried, by the client or the wait (and the task
    #: is not retried either: see :class:`TerminalAPIError`).
    terminal: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        error_code: str | None = None,
    ) -> None:
        self.message = message
        #: ``error.details.error_code`` of the answer, when the API named the cause.
        self.error_code = error_code
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        self.request_id = request_id
        #: Seconds the server asked to wait before trying again, when it said so.
        self.retry_after: float | None = None
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"Anthropic API error {self.status_code} {self.error_type}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.request_id:
            text += f" [request_id={self.request_id}]"
        return text


class InvalidRequestError(AnthropicAPIError):
    status_code = 400
    error_type = "invalid_request_error"
    hint = "fix the request named in the message; retrying unchanged will fail again"


class TerminalAPIError(AnthropicAPIError, AirflowFailException):
    """An answer no retry can change until someone changes a setting (a limit, billing, access).

    Raised at once: the client does not retry it, a wait stops on it, and Airflow does not retry the
    task (``AirflowFailException``); the hint says what to change.
    """

    terminal = True
    #: The ``error.details.error_code`` that names this error, when one does.
    error_code_value: str = ""


class AuthenticationError(TerminalAPIError):
    status_code = 401
    error_type = "authentication_error"
    hint = "check the API key in the connection's password field or ANTHROPIC_API_KEY"


class BillingError(TerminalAPIError):
    status_code = 402
    error_type = "billing_error"
    hint = (
        "check the organisation's billing and credit balance in the Claude Console (Settings > Billing); "
        "not retried: retrying cannot succeed until it is fixed"
    )


class PermissionDeniedError(TerminalAPIError):
    status_code = 403
    error_type = "permission_error"
    hint = (
        "the API key's workspace lacks access to this resource or model: use a key of a workspace that "
        "has it; not retried"
    )


class SpendLimitReachedError(TerminalAPIError):
    """429 ``rate_limit_error`` with ``error.details.error_code = enforced_spend_limit_reached``: the
    organization crossed the monthly spend limit of its usage tier (no ``retry-after``)."""

    status_code = 429
    error_type = "rate_limit_error"
    error_code_value = "enforced_spend_limit_reached"
    hint = (
        "the organization reached the monthly spend limit of its API usage tier: raise the tier or the "
        "limit in the Claude Console (Settings > Limits), or wait for the next calendar month; not "
        "retried: every retry would fail the same way until then"
    )


class UsageLimitReachedError(TerminalAPIError):
    """400 "You have reached your specified API usage limits": a spend limit the user set."""

    status_code = 400
    error_type = "invalid_request_error"
    hint = (
        "the spend limit set for the organization or workspace in the Claude Console was reached: raise "
        "it (Settings > Limits) or wait until the date the message gives; not retried"
    )


class OrganizationOnHoldError(TerminalAPIError):
    """400 with ``error.details.error_code = organization_on_hold``: Anthropic disabled the organization."""

    status_code = 400
    error_type = "invalid_request_error"
    error_code_value = "organization_on_hold"
    hint = (
        "Anthropic has put the organization on hold: nothing can be sent until it is lifted; contact "
        "Anthropic support (or appeal) before running the job again; not retried"
    )


class WorkspaceHumanReviewDisabledError(TerminalAPIError):
    """400 with ``error.details.error_code = workspace_human_review_disabled``."""

    status_code = 400
    error_type = "invalid_request_error"
    error_code_value = "workspace_human_review_disabled"
    hint = "this operation needs a workspace with Human Review on: use such a workspace's key; not retried"


class NotFoundError(AnthropicAPIError):
    status_code = 404
    error_type = "not_found_error"
    hint = "check the id and that the connection uses the workspace that owns it"


class ConflictError(AnthropicAPIError):
    status_code = 409
    error_type = "conflict_error"
    hint = "a conflicting operation was in progress; it was retried"


class RequestTooLargeError(AnthropicAPIError):
    status_code = 413
    error_type = "request_too_large"
    hint = "a batch body may be at most 256 MB; let the operator split the input"


class RateLimitError(AnthropicAPIError):
    status_code = 429
    error_type = "rate_limit_error"
    hint = "rate limit reached after retries; lower concurrency or raise max_retries on the connection"


class InternalServerError(AnthropicAPIError):
    status_code = 500
    error_type = "api_error"
    hint = "an error on Anthropic's side; it was retried"


class GatewayTimeoutError(AnthropicAPIError):
    status_code = 504
    error_type = "timeout_error"
    hint = "the request timed out on Anthropic's side; it was retried"


class OverloadedError(AnthropicAPIError):
    status_code = 529
    error_type = "overloaded_error"
    hint = "the API is temporarily overloaded; it was retried, try again later"


ERRORS_BY_TYPE: Mapping[str, type[AnthropicAPIError]] = {
    cls.error_type: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        BillingError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RequestTooLargeError,
        RateLimitError,
        GatewayTimeoutError,
        OverloadedError,
    )
}
_STATUS_CLASSES: tuple[type[AnthropicAPIError], ...] = (*ERRORS_BY_TYPE.values(), InternalServerError)
ERRORS_BY_STATUS: Mapping[int, type[AnthropicAPIError]] = {
    cls.status_code: cls for cls in _STATUS_CLASSES if cls.status_code is not None
}


#: Terminal answers named by ``error.details.error_code``.
ERRORS_BY_CODE: Mapping[str, type[AnthropicAPIError]] = {
    cls.error_code_value: cls
    for cls in (SpendLimitReachedError, OrganizationOnHoldError, WorkspaceHumanReviewDisabledError)
}
#: How the API words a spend limit set by the user (a 400 with no error code).
USAGE_LIMIT_MESSAGE = "You have reached your specified API usage limits"


def error_from_response(status_code: int, body: bytes, request_id: str | None) -> AnthropicAPIError:
    """Map an error answer to its exception; unknown types and non-JSON bodies still read well."""
    error_type: str | None = None
    message: str | None = None
    error_code: str | None = None
    try:
        payload: Any = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            message = error.get("message") if isinstance(error.get("message"), str) else None
            details = error.get("details")
            code = details.get("error_code") if isinstance(details, dict) else None
            error_code = code if isinstance(code, str) else None
        request_id = payload.get("request_id") or request_id
    if message is None:
        message = _summarize_non_json(body)
    cls = (
        ERRORS_BY_CODE.get(error_code or "")
        or (
            UsageLimitReachedError if status_code == 400 and message.startswith(USAGE_LIMIT_MESSAGE) else None
        )
        or ERRORS_BY_TYPE.get(error_type or "")
        or ERRORS_BY_STATUS.get(status_code, AnthropicAPIError)
    )
    return cls(
        _printable(message, MAX_ERROR_MESSAGE_CHARS),
        status_code=status_code,
        error_type=_printable(error_type, 100) if error_type is not None else None,
        request_id=_printable(request_id, 200) if isinstance(request_id, str) else None,
        error_code=_printable(error_code, 100) if error_code is not None else None,
    )


#: An error message from the server is cut to this many characters: it goes into logs and task state.
MAX_ERROR_MESSAGE_CHARS = 2000
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def _printable(text: str, limit: int) -> str:
    """Server text made safe for a log line: control characters and line breaks as one space, cut."""
    text = _UNPRINTABLE.sub(" ", text)
    return text if len(text) <= limit else text[:limit] + "..."


def _summarize_non_json(body: bytes) -> str:
    """A proxy's HTML page or a plain-text body, cut to something readable in a task log."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return "empty error body"
    if "<" in text and ">" in text:
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = re.sub(r"<[^>]+>", " ", title.group(1) if title else text)
        text = " ".join(text.split())
        return f"non-JSON error page: {text[:200]}"
    return f"non-JSON error body: {' '.join(text.split())[:200]}"


class APIConnectionError(AnthropicBatchesError):
    """The API could not be reached (after retries): DNS, refused connection, timeout, reset."""


class BatchCreateUncertainError(AnthropicBatchesError):
    """A create call may have reached the API but its answer was lost; a billed batch may exist.

    Raised instead of blindly retrying, so that no second batch is paid for.
    """

    def __init__(self, message: str, candidate_batch_ids: Sequence[str] = ()) -> None:
        self.candidate_batch_ids = list(candidate_batch_ids)
        super().__init__(message)


class CreateAnswerLostError(BatchCreateUncertainError):
    """A create's answer was lost after the request may have reached the API, and the caller asked to
    settle it itself (the create operator proves ownership from the results): nothing was looked up,
    adopted or sent again."""


class ForeignResultsURLError(AnthropicBatchesError):
    """A results_url points at another origin than the configured API; the key is not sent there."""


class UnexpectedAnswerError(AnthropicBatchesError):
    """The API, or a gateway in between, answered what this client cannot use: an id of the wrong
    shape, another batch than the one asked for, a body that is not the documented object. Nothing
    was done with the answer."""


class BatchNotReadyError(AnthropicBatchesError):
    """Results were asked for before the batch ended, or after they were archived."""


class ConnectionConfigError(AnthropicBatchesError):
    """The Airflow connection is unusable: wrong type, no API key, a bad extra."""


class RequestValidationError(AnthropicBatchesError, ValueError):
    """Input requests failed client-side validation; nothing was sent and nothing was paid for."""


class BudgetExceededError(AnthropicBatchesError, AirflowFailException):
    """A token or cost budget would be exceeded; nothing was spent. Not retried: the input must change."""


class UnpricedModelError(BudgetExceededError):
    """A cost estimate was asked for a model with no known price; ``prices=`` supplies it. Not retried."""


class BatchWaitError(AnthropicBatchesError):
    """Waiting for batches could not go on (a fatal poll error), or a trigger event made no sense."""


class BatchCanceledError(BatchWaitError):
    """A batch of the job was canceled by someone other than the job; not overridden without
    ``on_external_cancel="resume"``. Nothing was sent."""

    def __init__(self, message: str, batch_ids: Sequence[str] = ()) -> None:
        self.batch_ids = list(batch_ids)
        super().__init__(message)


class BatchTimeoutError(AnthropicBatchesError):
    """The batches had not ended by the task's timeout; the task canceled the ones it owns."""


class BatchOutcomeError(AnthropicBatchesError):
    """Requests ended errored or expired and the task was told to fail on that (fail_on_partial_error)."""


class BatchQueueFullError(AnthropicBatchesError):
    """The organization's processing queue had no room for the job's next batch (none was made)."""


class JobRecordError(AnthropicBatchesError):
    """The task's record of its batches is unreadable or inconsistent: nothing is sent on a guess."""


class InputChangedError(AnthropicBatchesError):
    """The input differs from the one an earlier try of the task submitted; nothing new was sent."""
