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
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from airflow_provider_batches.errors import (
    AnthropicAPIError,
    APIConnectionError,
    BatchCreateUncertainError,
    ForeignResultsURLError,
    error_from_response,
)
from airflow_provider_batches.models import MessageBatch, MessageBatchPage
from airflow_provider_batches.policy import RETRYABLE_STATUSES, is_retryable_status

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
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
#: How far back (clock skew, listing lag) a lost create's batch is looked for.
CREATE_LOOKBACK = timedelta(minutes=2)
CREATE_LOOKUP_PAGES = 5
#: Slack on the API-clock window of a lost create's lookup: the ``Date`` header's one-second
#: resolution, and clock steps between the create and the lookup.
SERVER_CLOCK_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, resolved from an Airflow connection. The key never shows in repr."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    max_retry_wait: float = 300.0
    betas: tuple[str, ...] = ()

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path


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


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        error = error_from_response(
            response.status_code, response.content, response.headers.get("request-id")
        )
        error.retry_after = server_retry_after(response)
        raise error


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
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not call.idempotent and not isinstance(exc, NOT_SENT_ERRORS):
                raise _MaybeSent(reason) from exc
            delay = budget.next_delay(None)
            if delay is None:
                raise APIConnectionError(
                    f"could not reach the Anthropic API at {settings.base_url} "
                    f"({_describe(call)}): {reason}; "
                    f"gave up after {budget.attempts + 1} attempts"
                ) from exc
            log.warning("Retrying %s in %.2f s after %s", _describe(call), delay, reason)
            yield Sleep(delay)
            continue
        if response.status_code < 400:
            return response
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
        _raise_for_status(response)


def model_plan(settings: ClientSettings, call: Call, model: type[M]) -> Plan[M]:
    """Send ``call`` and parse its answer straight from the bytes into ``model``."""
    response = yield from request_plan(settings, call)
    return model.model_validate_json(response.content)


# -- Batches --------------------------------------------------------------------------------------


def batches_path(batch_id: str | None = None, action: str | None = None) -> str:
    path = "/v1/messages/batches"
    if batch_id is not None:
        if not batch_id or "/" in batch_id or "?" in batch_id:
            raise ValueError(f"batch_id {batch_id!r} is not a valid batch id")
        path += f"/{batch_id}"
    if action:
        path += f"/{action}"
    return path


def get_batch_plan(
    settings: ClientSettings, batch_id: str, *, betas: Sequence[str] | None = None
) -> Plan[MessageBatch]:
    """``GET /v1/messages/batches/{id}``: one batch, with the usual retries (also each poll of a wait)."""
    return model_plan(settings, Call("GET", batches_path(batch_id), betas=betas), MessageBatch)


def list_page_plan(
    settings: ClientSettings,
    *,
    limit: int = 20,
    before_id: str | None = None,
    after_id: str | None = None,
    betas: Sequence[str] | None = None,
) -> Plan[MessageBatchPage]:
    page, _ = yield from _dated_list_page_plan(
        settings, limit=limit, before_id=before_id, after_id=after_id, betas=betas
    )
    return page


def _dated_list_page_plan(
    settings: ClientSettings,
    *,
    limit: int,
    before_id: str | None = None,
    after_id: str | None = None,
    betas: Sequence[str] | None = None,
) -> Plan[tuple[MessageBatchPage, datetime | None]]:
    """One page, and the API's clock when it answered (its ``Date`` header), when it says."""
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    params: dict[str, str | int] = {"limit": limit}
    if before_id:
        params["before_id"] = before_id
    if after_id:
        params["after_id"] = after_id
    response = yield from request_plan(settings, Call("GET", batches_path(), params=params, betas=betas))
    return MessageBatchPage.model_validate(response.json()), _server_date(response)


def _server_date(response: httpx.Response) -> datetime | None:
    value = response.headers.get("date")
    try:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed


def create_batch_plan(
    settings: ClientSettings,
    call: Call,
    request_count: int,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    rng: random.Random | None = None,
) -> Plan[MessageBatch]:
    """Create a batch, never paying twice: a lost answer is resolved by looking, not by resending."""
    started_at = now()
    try:
        response = yield from request_plan(settings, call, rng)
    except _MaybeSent as lost:
        log.warning(
            "The create call's answer was lost (%s); looking for the batch among recent batches "
            "instead of sending it again",
            lost.reason,
        )
        candidates: list[MessageBatch] = []
        for pause in (0.0, 2.0):
            if pause:
                yield Sleep(pause)
            candidates = yield from find_recent_batches_plan(
                settings,
                created_after=started_at - CREATE_LOOKBACK,
                request_count=request_count,
                betas=call.betas,
                sent_at=started_at,
                now=now,
            )
            if candidates:
                break
        if len(candidates) == 1:
            log.warning("Found the batch the lost create made: %s", candidates[0].id)
            return candidates[0]
        ids = [batch.id for batch in candidates]
        if ids:
            detail = f"{len(ids)} recent batches of {request_count} requests match: {', '.join(ids)}"
        else:
            since = f"{started_at:%Y-%m-%dT%H:%M:%SZ}"
            detail = f"no batch of {request_count} requests created since {since} is listed yet"
        raise BatchCreateUncertainError(
            f"The create call's answer was lost ({lost.reason}) and a billed batch may exist: {detail}. "
            "Check the Anthropic console before resubmitting; cancel any duplicate.",
            ids,
        ) from None
    return MessageBatch.model_validate_json(response.content)


def find_recent_batches_plan(
    settings: ClientSettings,
    *,
    created_after: datetime,
    request_count: int | None = None,
    betas: Sequence[str] | None = None,
    max_pages: int = CREATE_LOOKUP_PAGES,
    sent_at: datetime | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Plan[list[MessageBatch]]:
    """Batches created after ``created_after`` (newest first), optionally of a given size.

    With ``sent_at`` (our clock's time of the create being looked for), the window is narrowed to
    what the API's own clock (its ``Date`` header) says is since then, so that an earlier batch of
    the same size (the previous run of the same job) is not taken for the lost one.
    """
    found: list[MessageBatch] = []
    after_id: str | None = None
    for _ in range(max_pages):
        page, server_now = yield from _dated_list_page_plan(
            settings, limit=100, after_id=after_id, betas=betas
        )
        if sent_at is not None and server_now is not None and after_id is None:
            elapsed = now() - sent_at
            created_after = max(created_after, server_now - elapsed - SERVER_CLOCK_MARGIN)
        for batch in page.data:
            if batch.created_at < created_after:
                return found
            if request_count is None or batch.request_counts.total == request_count:
                found.append(batch)
        if not page.has_more or not page.last_id:
            break
        after_id = page.last_id
    return found


def check_results_url(settings: ClientSettings, results_url: str) -> str:
    """Refuse to send the key to another origin than the configured API's (scheme, host, port)."""
    configured, target = urlsplit(settings.base_url), urlsplit(results_url)
    if (configured.scheme, configured.hostname, _port(configured)) != (
        target.scheme,
        target.hostname,
        _port(target),
    ):
        raise ForeignResultsURLError(
            f"results_url {target.scheme}://{target.netloc} is not the configured API origin "
            f"{configured.scheme}://{configured.netloc}; the API key is not sent there. If a gateway "
            "rewrites result URLs, set the connection's host to that gateway."
        )
    return results_url


def _port(parts: Any) -> int | None:
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme)


# -- Results lines --------------------------------------------------------------------------------


class LineSplitter:
    """Splits a byte stream into lines (LF or CRLF), skipping blank lines, across chunk borders."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.rstrip(b"\r") for line in lines if line.strip()]

    def flush(self) -> list[bytes]:
        rest, self._buffer = self._buffer.strip(), b""
        return [rest] if rest else []


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


__all__ = [
    "BATCHES_BETA",
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "RETRYABLE_STATUSES",
    "AnthropicAPIError",
    "Call",
    "ClientSettings",
    "LineSplitter",
    "Send",
    "Sleep",
    "build_request",
    "check_results_url",
    "create_batch_plan",
    "get_batch_plan",
    "list_page_plan",
    "request_plan",
    "run_async",
    "run_sync",
    "server_retry_after",
    "should_retry",
]
