"""Sans-I/O core of the API client: request building, retry decisions and error mapping.

The sync and async halves of :class:`~airflow_provider_batches.hooks.anthropic.AnthropicHook` run
the same *plans*: generators that yield effects (:class:`Send` a request, :class:`Sleep`) and
receive their outcomes. All policy lives in the plans, written once; the two small drivers at the
bottom of this module are the only code that touches sockets and clocks.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from airflow_provider_batches._compat import moved_names, warn_deprecated
from airflow_provider_batches.batch_ids import check_batch_id
from airflow_provider_batches.client_settings import (  # every plan takes ClientSettings: part of this API
    DEFAULT_ANTHROPIC_VERSION,
    DEFAULT_BASE_URL,
    ClientSettings,
)
from airflow_provider_batches.errors import (
    AnthropicAPIError,
    APIConnectionError,
    BatchCreateUncertainError,
    CreateAnswerLostError,
    UnexpectedAnswerError,
    error_from_response,
)
from airflow_provider_batches.models import MessageBatch, MessageBatchPage, ModelInfo, ModelPage
from airflow_provider_batches.policy import check_results_origin, is_retryable_status

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

BATCHES_BETA = "message-batches-2024-09-24"
USER_AGENT = "airflow-provider-batches"

#: Statuses after which a create may or may not have happened server-side.
AMBIGUOUS_CREATE_STATUSES = frozenset({500, 502, 503, 504})
#: Transport errors raised before a single byte of the request could reach the server.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
#: Listing pages (100 batches each) a lost create's batch is looked for in, newest first.
CREATE_LOOKUP_PAGES = 10


# -- Effects --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``request``; the plan receives the ``httpx.Response`` or has the transport error thrown in."""

    request: httpx.Request
    stream: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


Effect = Send | Sleep
Plan = Generator[Effect, Any, T]
BodyFactory = Callable[[], bytes | Iterable[bytes] | AsyncIterator[bytes]]


# -- Requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One logical API call. ``body`` is a factory so a retried call can stream its body again."""

    method: str
    path: str
    json_body: Any = None
    body: BodyFactory | None = None
    params: Mapping[str, str | int] | None = None
    betas: Sequence[str] | None = None
    stream: bool = False
    #: False for a create: the call must not be repeated once it may have reached the server.
    idempotent: bool = True


def merged_betas(settings: ClientSettings, betas: Sequence[str] | None) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(settings.betas)
    seen.update(dict.fromkeys(betas or ()))
    return [beta for beta in seen if beta]


def build_request(settings: ClientSettings, call: Call) -> httpx.Request:
    headers = {
        "x-api-key": settings.api_key,
        "anthropic-version": settings.anthropic_version,
        "accept": "application/json",
        "user-agent": USER_AGENT,
    }
    params: dict[str, str | int] = dict(call.params or {})
    betas = merged_betas(settings, call.betas)
    if betas:
        headers["anthropic-beta"] = ",".join(betas)
        params["beta"] = "true"
    url = httpx.URL(call.path if call.path.startswith(("http://", "https://")) else settings.url(call.path))
    if params:  # httpx replaces, not merges, a URL's own query (results_url may carry one)
        url = url.copy_merge_params(params)
    if call.json_body is not None:
        return httpx.Request(call.method, url, headers=headers, json=call.json_body)
    if call.body is not None:
        headers["content-type"] = "application/json"
        return httpx.Request(call.method, url, headers=headers, content=call.body())  # type: ignore[arg-type]
    return httpx.Request(call.method, url, headers=headers)


# -- Retry decisions ------------------------------------------------------------------------------


def should_retry(response: httpx.Response) -> bool:
    """The server's ``x-should-retry`` wins; otherwise 408, 409, 429 and 5xx are retried."""
    override = str(response.headers.get("x-should-retry", "")).lower()
    if override in ("true", "false"):
        return override == "true"
    return is_retryable_status(int(response.status_code))


def server_retry_after(response: httpx.Response | None) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, then ``retry-after``), if sane (0-60 s)."""
    if response is None:
        return None
    seconds: float | None = None
    if (millis := response.headers.get("retry-after-ms")) is not None:
        try:
            seconds = float(millis) / 1000
        except ValueError:
            seconds = None
    if seconds is None and (value := response.headers.get("retry-after")) is not None:
        try:
            seconds = float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            if parsed is not None:
                seconds = (parsed - datetime.now(timezone.utc)).total_seconds()
    if seconds is not None and 0 < seconds <= 60:
        return seconds
    return None


#: A 429's retry-after is stretched by up to this fraction, at random: clients told the same
#: whole second do not all come back in it (1,000 polls once retried at exactly 59.00 s).
RATE_LIMIT_JITTER = 0.5


def jittered_retry_after(seconds: float, rng: random.Random) -> float:
    """Full jitter above the server's ``retry-after``: never sooner, spread over half as long again."""
    return seconds * (1 + RATE_LIMIT_JITTER * rng.random())


#: Jitter source shared by every call: seeding a new ``random.Random()`` reads the OS entropy pool and
#: costs ~0.1 ms, a tenth of a status poll's whole CPU budget (see bench/results.md, scenario 3).
_JITTER = random.Random()


@dataclass
class RetryBudget:
    """Counts attempts and time spent waiting, so retries stay bounded on both."""

    settings: ClientSettings
    rng: random.Random = field(default_factory=lambda: _JITTER)
    attempts: int = 0
    waited: float = 0.0

    def next_delay(self, response: httpx.Response | None) -> float | None:
        """Seconds to wait before the next attempt, or None when retries are used up."""
        if self.attempts >= self.settings.max_retries:
            return None
        delay = server_retry_after(response)
        if delay is not None and response is not None and response.status_code == 429:
            delay = jittered_retry_after(delay, self.rng)
        if delay is None:
            delay = min(0.5 * 2**self.attempts, 8.0) * (1 - 0.25 * self.rng.random())
        if self.waited + delay > self.settings.max_retry_wait:
            return None
        self.attempts += 1
        self.waited += delay
        return delay


class _MaybeSent(Exception):
    """Internal: a non-idempotent call failed after its request may have reached the server."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(call: Call) -> str:
    return f"{call.method} {urlsplit(call.path).path}"


def _transport_reason(settings: ClientSettings, exc: httpx.TransportError) -> str:
    """What went wrong on the wire, for messages and logs: never a request header's value."""
    if isinstance(exc, httpx.LocalProtocolError):  # a request httpx could not build: its text may
        return type(exc).__name__  # quote a header (the key) byte for byte
    text = settings.redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_of(response: httpx.Response, settings: ClientSettings | None = None) -> AnthropicAPIError:
    """The exception an error answer maps to (its ``retry_after`` set when the server gave one); given
    ``settings``, a body that echoes the key is redacted first."""
    body = response.content
    if settings is not None:
        body = settings.redact(body.decode("utf-8", "replace")).encode("utf-8")
    error = error_from_response(response.status_code, body, response.headers.get("request-id"))
    error.retry_after = server_retry_after(response)
    return error


def is_terminal_response(response: httpx.Response) -> bool:
    """An answer no retry can change (spend limit, billing, permission...): see ``TerminalAPIError``."""
    return response.status_code >= 400 and error_of(response).terminal


def request_plan(
    settings: ClientSettings, call: Call, rng: random.Random | None = None
) -> Plan[httpx.Response]:
    """Send ``call`` with retries; return the successful response or raise the mapped error."""
    budget = RetryBudget(settings, rng or _JITTER)
    while True:
        request = build_request(settings, call)
        try:
            response: httpx.Response = yield Send(request, stream=call.stream)
        except httpx.TransportError as exc:
            reason = _transport_reason(settings, exc)
            # A cause whose text held the key is not chained: tracebacks print it.
            cause = exc if settings.redact(str(exc)) == str(exc) else None
            if not call.idempotent and not isinstance(exc, NOT_SENT_ERRORS):
                raise _MaybeSent(reason) from cause
            delay = budget.next_delay(None)
            if delay is None:
                raise APIConnectionError(
                    f"could not reach the Anthropic API at {settings.base_url} "
                    f"({_describe(call)}): {reason}; "
                    f"gave up after {budget.attempts + 1} attempts"
                ) from cause
            log.warning("Retrying %s in %.2f s after %s", _describe(call), delay, reason)
            yield Sleep(delay)
            continue
        if response.status_code < 400:
            return response
        error = error_of(response, settings)
        if error.terminal:  # a spend limit, billing, permission: retrying only burns the rate budget
            raise error
        if should_retry(response):
            if not call.idempotent and response.status_code in AMBIGUOUS_CREATE_STATUSES:
                raise _MaybeSent(f"HTTP {response.status_code}")
            delay = budget.next_delay(response)
            if delay is not None:
                log.warning(
                    "Retrying %s in %.2f s after HTTP %s (attempt %d of %d)",
                    _describe(call),
                    delay,
                    response.status_code,
                    budget.attempts,
                    settings.max_retries,
                )
                yield Sleep(delay)
                continue
        raise error


def model_plan(settings: ClientSettings, call: Call, model: type[M]) -> Plan[M]:
    """Send ``call`` and parse its answer straight from the bytes into ``model``."""
    response = yield from request_plan(settings, call)
    return parse_answer(settings, call, model, response)


def parse_answer(settings: ClientSettings, call: Call, model: type[M], response: httpx.Response) -> M:
    """The answer as ``model`` (ids checked for their shape on the way), or UnexpectedAnswerError."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(body)"
        raise UnexpectedAnswerError(
            settings.redact(
                f"{_describe(call)}: the answer is not a valid {model.__name__} ({where}: {first['msg']}). "
                "A gateway or proxy between this client and the API (the connection's host) may be "
                "broken; nothing was done with the answer"
            )
        ) from None


def same_batch_plan(settings: ClientSettings, call: Call, model: type[M], asked: str) -> Plan[M]:
    """:func:`model_plan` for a call about batch ``asked``: an answer about any other batch raises."""
    answer = yield from model_plan(settings, call, model)
    answered = getattr(answer, "id", None)
    if answered != asked:
        raise UnexpectedAnswerError(
            settings.redact(
                f"{_describe(call)} asked about batch {asked} and the answer is about batch {answered}: "
                "another batch's object is never used in its place. A gateway or proxy between this "
                "client and the API (the connection's host) may be broken; nothing was done with the answer"
            )
        )
    return answer


# -- Batches --------------------------------------------------------------------------------------


def batches_path(batch_id: str | None = None, action: str | None = None) -> str:
    path = "/v1/messages/batches"
    if batch_id is not None:
        path += f"/{check_batch_id(batch_id, 'batch_id')}"
    if action:
        path += f"/{action}"
    return path


def get_batch_plan(
    settings: ClientSettings, batch_id: str, *, betas: Sequence[str] | None = None
) -> Plan[MessageBatch]:
    """``GET /v1/messages/batches/{id}``: one batch, with the usual retries (also each poll of a wait)."""
    return same_batch_plan(settings, Call("GET", batches_path(batch_id), betas=betas), MessageBatch, batch_id)


def list_page_plan(
    settings: ClientSettings,
    *,
    limit: int = 20,
    before_id: str | None = None,
    after_id: str | None = None,
    betas: Sequence[str] | None = None,
) -> Plan[MessageBatchPage]:
    """One page of the listing, newest first."""
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    params: dict[str, str | int] = {"limit": limit}
    if before_id:
        params["before_id"] = before_id
    if after_id:
        params["after_id"] = after_id
    return (
        yield from model_plan(
            settings, Call("GET", batches_path(), params=params, betas=betas), MessageBatchPage
        )
    )


# -- Models (free: no tokens are billed) ------------------------------------------------------------


def models_path(model_id: str | None = None) -> str:
    if model_id is None:
        return "/v1/models"
    if not model_id or "/" in model_id or "?" in model_id or "#" in model_id:
        raise ValueError(f"model {model_id!r} is not a valid model id")
    return f"/v1/models/{model_id}"


def get_model_plan(settings: ClientSettings, model_id: str) -> Plan[ModelInfo]:
    """``GET /v1/models/{id}``: what the model accepts (limits, capabilities, lifecycle)."""
    return model_plan(settings, Call("GET", models_path(model_id)), ModelInfo)


def list_models_page_plan(
    settings: ClientSettings, *, limit: int = 1000, after_id: str | None = None
) -> Plan[ModelPage]:
    """One page of ``GET /v1/models``, newest first."""
    params: dict[str, str | int] = {"limit": limit}
    if after_id:
        params["after_id"] = after_id
    return model_plan(settings, Call("GET", models_path(), params=params), ModelPage)


@dataclass(frozen=True)
class CreateWatermark:
    """The newest batch listed just before a paid create: the lost create's batch can only be newer.

    The listing is ordered newest first, so this is evidence that does not depend on clocks lining
    up: an earlier job's batch (even of the same size, even a second earlier) is never newer than
    the watermark taken before this create was sent.
    """

    newest_id: str | None
    newest_created_at: datetime | None = None

    def to_json(self) -> dict[str, str | None]:
        created = self.newest_created_at.isoformat() if self.newest_created_at else None
        return {"newest_id": self.newest_id, "newest_created_at": created}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreateWatermark:
        created = data.get("newest_created_at")
        return cls(data.get("newest_id"), datetime.fromisoformat(created) if created else None)


def create_watermark_plan(
    settings: ClientSettings, *, betas: Sequence[str] | None = None
) -> Plan[CreateWatermark]:
    """One listing of one batch: the watermark to take right before a paid create."""
    page = yield from list_page_plan(settings, limit=1, betas=betas)
    if not page.data:
        return CreateWatermark(None)
    return CreateWatermark(page.data[0].id, page.data[0].created_at)


def create_call_budget(settings: ClientSettings) -> float:
    """The longest a create call can take, all attempts and waits included (seconds)."""
    return (settings.timeout + settings.connect_timeout) * (
        settings.max_retries + 1
    ) + settings.max_retry_wait


def create_batch_plan(
    settings: ClientSettings,
    call: Call,
    request_count: int,
    *,
    watermark: CreateWatermark | None = None,
    exclude: Iterable[str] = (),
    rng: random.Random | None = None,
    look_up_lost: bool = True,
) -> Plan[MessageBatch]:
    """Create a batch, never paying twice: a lost answer is resolved by looking, not by resending.

    ``watermark`` (taken here when not given) bounds the search for a lost answer's batch to the
    batches listed since; ``exclude`` are batches already known not to be this call's (the job's
    other batches). With ``look_up_lost=False`` a lost answer raises :class:`CreateAnswerLostError`
    at once: the caller settles it by proof (the create operator).
    """
    if watermark is None:
        watermark = yield from create_watermark_plan(settings, betas=call.betas)
    try:
        response = yield from request_plan(settings, call, rng)
    except _MaybeSent as lost:
        if not look_up_lost:
            raise CreateAnswerLostError(
                f"The create call's answer was lost ({lost.reason}); it may or may not have made a batch. "
                "Nothing was sent again.",
                [],
            ) from None
        log.warning(
            "The create call's answer was lost (%s); looking for the batch it made among the batches "
            "listed since, instead of sending it again",
            lost.reason,
        )
        found: MessageBatch | None = None
        for pause in (0.0, 2.0):
            if pause:
                yield Sleep(pause)
            found = yield from find_created_batch_plan(
                settings, watermark, request_count, exclude=exclude, betas=call.betas, reason=lost.reason
            )
            if found is not None:
                break
        if found is None:
            raise BatchCreateUncertainError(
                f"The create call's answer was lost ({lost.reason}) and no batch of {request_count} "
                f"requests is listed since {_describe_watermark(watermark)}: the create may not have "
                "reached the API, or the listing lags. Nothing was sent again. Retry the task: the retry "
                "looks again and creates the batch only if it still is not there.",
                [],
            ) from None
        log.warning("Found the batch the lost create made: %s", found.id)
        return found
    return parse_answer(settings, call, MessageBatch, response)


@dataclass(frozen=True)
class CreateCandidates:
    """The batches a lost create may have made: listed newer than its watermark, of its size, not
    listed after ``until``, and not excluded. Only the results can say which, if any, is its own."""

    batches: list[MessageBatch]
    #: The newest batch listed by this search: the upper bound to record for every later search, so
    #: a later try never widens the window to batches made after the create was lost.
    until: CreateWatermark


def _listed_since_plan(
    settings: ClientSettings,
    watermark: CreateWatermark,
    *,
    until: CreateWatermark | None,
    betas: Sequence[str] | None,
    max_pages: int,
) -> Plan[tuple[list[MessageBatch], CreateWatermark, bool]]:
    """The batches listed newer than ``watermark`` and not newer than ``until``, the newest batch
    listed, and whether the listing reached back to the watermark."""
    found: list[MessageBatch] = []
    newest: CreateWatermark | None = None
    after_id: str | None = None
    reached_watermark = watermark.newest_id is None
    below_until = until is None
    for _ in range(max_pages):
        page = yield from list_page_plan(settings, limit=100, after_id=after_id, betas=betas)
        for batch in page.data:
            if newest is None:
                newest = CreateWatermark(batch.id, batch.created_at)
            if batch.id == watermark.newest_id or (
                watermark.newest_created_at is not None and batch.created_at < watermark.newest_created_at
            ):
                reached_watermark = True
                break
            if not below_until and until is not None:
                if batch.id == until.newest_id:
                    below_until = True
                elif until.newest_created_at is None or batch.created_at > until.newest_created_at:
                    continue  # made after the first search that followed the lost create
                below_until = True
            found.append(batch)
        else:
            if page.has_more and page.last_id:
                after_id = page.last_id
                continue
            reached_watermark = True  # the listing ended: every batch was seen
        break
    return found, newest or watermark, reached_watermark


def create_candidates_plan(
    settings: ClientSettings,
    watermark: CreateWatermark,
    request_count: int,
    *,
    exclude: Iterable[str] = (),
    until: CreateWatermark | None = None,
    betas: Sequence[str] | None = None,
    max_pages: int = CREATE_LOOKUP_PAGES,
) -> Plan[CreateCandidates]:
    """Every batch a lost create of ``request_count`` requests may have made (canceled ones too: a
    batch of this job canceled by a person is still its own). Nothing here is proof of ownership:
    the caller proves it from the results (:mod:`~airflow_provider_batches.proof`)."""
    excluded = set(exclude)
    listed, newest, reached = yield from _listed_since_plan(
        settings, watermark, until=until, betas=betas, max_pages=max_pages
    )
    batches = [b for b in listed if b.request_counts.total == request_count and b.id not in excluded]
    if not reached:
        ids = [batch.id for batch in batches]
        raise BatchCreateUncertainError(
            f"A create may have made a billed batch, but more than {max_pages * 100} batches were created "
            f"since {_describe_watermark(watermark)}, so its candidates cannot all be listed (those of "
            f"{request_count} requests seen: {', '.join(ids) or 'none'}). Nothing was sent again and no "
            "batch was adopted or canceled. Retry the task later: it looks again.",
            ids,
        )
    return CreateCandidates(batches, until or newest)


def find_created_batch_plan(
    settings: ClientSettings,
    watermark: CreateWatermark,
    request_count: int,
    *,
    exclude: Iterable[str] = (),
    betas: Sequence[str] | None = None,
    reason: str = "its answer was lost",
    max_pages: int = CREATE_LOOKUP_PAGES,
) -> Plan[MessageBatch | None]:
    """The one batch a lost create made, or None when there is none; any doubt raises.

    For the hook's own callers, whose bodies carry no proof request: a batch is taken as this
    create's when it is listed newer than ``watermark``, has ``request_count`` requests, is not in
    ``exclude`` and was not canceled. Size and time are all the listing shows, and another job on the
    same key can match both: two or more such batches, or a listing that does not reach back to the
    watermark, raise :class:`BatchCreateUncertainError` naming them, and even a single one is only
    likely this create's (the results transfer's custom_id check is the backstop). The create
    operator does not use this: it proves ownership by the results (``create_candidates_plan``).
    """
    excluded = set(exclude)
    listed, _, reached_watermark = yield from _listed_since_plan(
        settings, watermark, until=None, betas=betas, max_pages=max_pages
    )
    candidates = [
        batch
        for batch in listed
        if batch.request_counts.total == request_count
        and batch.id not in excluded
        and batch.cancel_initiated_at is None
    ]
    ids = [batch.id for batch in candidates]
    if not reached_watermark:
        raise BatchCreateUncertainError(
            f"A create ({reason}) may have made a billed batch, but more than {max_pages * 100} batches "
            f"were created since {_describe_watermark(watermark)}; its batch cannot be told apart. "
            f"Batches of {request_count} requests among them: {', '.join(ids) or 'none'}. Nothing was "
            "adopted or canceled. Do not cancel any of them on a guess: they may be other jobs' batches.",
            ids,
        )
    if len(candidates) > 1:
        raise BatchCreateUncertainError(
            f"A create ({reason}) may have made a billed batch, and {len(ids)} batches of "
            f"{request_count} requests were created since {_describe_watermark(watermark)}: "
            f"{', '.join(ids)}. Another job on the same API key created one in the same moment, so "
            "none is adopted and none is canceled. Do not cancel any of them on a guess: any may be "
            "another job's. Once they have ended, their results (custom_ids) show which one, if any, "
            "this call made.",
            ids,
        )
    return candidates[0] if candidates else None


def _describe_watermark(watermark: CreateWatermark) -> str:
    if watermark.newest_id is None:
        return "the first batch of this workspace"
    return f"batch {watermark.newest_id}"


def check_results_url(settings: ClientSettings, results_url: str) -> str:
    """Deprecated: :func:`airflow_provider_batches.policy.check_results_origin` is the rule's home."""
    warn_deprecated(
        f"{__name__}.check_results_url(settings, url)",
        "airflow_provider_batches.policy.check_results_origin(settings.base_url, url)",
    )
    return check_results_origin(settings.base_url, results_url)


# -- Drivers: the only I/O ------------------------------------------------------------------------


def run_sync(plan: Plan[T], client: httpx.Client) -> T:
    outcome: Any = None
    try:
        effect = plan.send(None)
        while True:
            if isinstance(effect, Sleep):
                time.sleep(effect.seconds)
                outcome = None
            else:
                try:
                    outcome = client.send(effect.request, stream=effect.stream)
                    if effect.stream and outcome.status_code >= 400:
                        outcome.read()
                        outcome.close()
                except httpx.TransportError as exc:
                    effect = plan.throw(exc)
                    continue
            effect = plan.send(outcome)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(plan: Plan[T], client: httpx.AsyncClient) -> T:
    outcome: Any = None
    try:
        effect = plan.send(None)
        while True:
            if isinstance(effect, Sleep):
                await asyncio.sleep(effect.seconds)
                outcome = None
            else:
                try:
                    outcome = await client.send(effect.request, stream=effect.stream)
                    if effect.stream and outcome.status_code >= 400:
                        await outcome.aread()
                        await outcome.aclose()
                except httpx.TransportError as exc:
                    effect = plan.throw(exc)
                    continue
            effect = plan.send(outcome)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def as_async_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """An upload body for httpx.AsyncClient from a sync chunk source."""
    for chunk in chunks:
        yield chunk


#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(
    __name__,
    {
        "LineSplitter": "airflow_provider_batches.result_lines",
        "RETRYABLE_STATUSES": "airflow_provider_batches.policy",
        "DEFAULT_MAX_REQUESTS_PER_MINUTE": "airflow_provider_batches.client_settings",
        "ForeignResultsURLError": "airflow_provider_batches.errors",  # imported here before
    },
)

__all__ = [
    "BATCHES_BETA",
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "AnthropicAPIError",
    "Call",
    "ClientSettings",
    "CreateCandidates",
    "CreateWatermark",
    "Send",
    "Sleep",
    "build_request",
    "check_results_url",
    "create_batch_plan",
    "create_call_budget",
    "create_candidates_plan",
    "create_watermark_plan",
    "error_of",
    "find_created_batch_plan",
    "get_batch_plan",
    "get_model_plan",
    "is_terminal_response",
    "list_models_page_plan",
    "list_page_plan",
    "request_plan",
    "run_async",
    "run_sync",
    "server_retry_after",
    "should_retry",
]
