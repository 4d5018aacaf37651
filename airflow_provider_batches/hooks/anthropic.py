"""AnthropicHook: an Airflow connection turned into a typed client for every API endpoint.

Each endpoint has a sync method and an async twin (``a`` prefix) for triggers. Both run the same
plan from :mod:`airflow_provider_batches.client_core`; only the driver differs. The wait in the
worker is a hook method too (:meth:`AnthropicHook.wait_for_batches`), the plan it runs is
:func:`~airflow_provider_batches.waiting.wait_plan`; every wait's sends are paced by the
connection's request budget here, in :meth:`AnthropicHook.run_plan` / ``arun_plan``, and nowhere else.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache, partial
from typing import Any, TypeVar

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from pydantic import BaseModel, ValidationError

from airflow_provider_batches import bodies
from airflow_provider_batches._compat import moved_names
from airflow_provider_batches.budget import budgeted, shared_budget
from airflow_provider_batches.client_core import (
    Call,
    CreateCandidates,
    CreateWatermark,
    Plan,
    as_async_chunks,
    batches_path,
    create_batch_plan,
    create_candidates_plan,
    create_watermark_plan,
    find_created_batch_plan,
    get_batch_plan,
    get_model_plan,
    list_models_page_plan,
    list_page_plan,
    model_plan,
    request_plan,
    run_async,
    run_sync,
    same_batch_plan,
)
from airflow_provider_batches.client_settings import CONNECTION_TYPE, DEFAULT_BASE_URL, ClientSettings
from airflow_provider_batches.errors import (
    AnthropicBatchesError,
    APIConnectionError,
    ConnectionConfigError,
    UnexpectedAnswerError,
)
from airflow_provider_batches.models import (
    BatchResult,
    DeletedMessageBatch,
    Message,
    MessageBatch,
    MessageBatchPage,
    ModelInfo,
    TokenCount,
)
from airflow_provider_batches.policy import (
    DEFAULT_MAX_POLL_INTERVAL,
    WaitSpec,
    check_results_origin,
    check_results_ready,
    raise_for_wait_event,
)
from airflow_provider_batches.result_lines import LineSplitter
from airflow_provider_batches.waiting import wait_plan

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
PlanFactory = Callable[[ClientSettings], Plan[T]]

#: Names that lived here once: importing them from here still works, with a deprecation warning.
__getattr__ = moved_names(
    __name__,
    {
        "BatchBody": "airflow_provider_batches.bodies",
        "results_not_ready_reason": "airflow_provider_batches.policy",
        # imported here before they moved, and so importable from here
        "BatchNotReadyError": "airflow_provider_batches.errors",
        "DEFAULT_ANTHROPIC_VERSION": "airflow_provider_batches.client_settings",
        "DEFAULT_MAX_REQUESTS_PER_MINUTE": "airflow_provider_batches.client_settings",
    },
)

#: Params that count_tokens accepts; the others (max_tokens, temperature...) do not change the count.
COUNTED_PARAMS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", "output_config"}
)
#: Connection types whose connections this hook reads: its own, and the vendor provider's.
ACCEPTED_CONN_TYPES = frozenset({CONNECTION_TYPE, "anthropic"})
#: The extras a connection may set (besides ``betas``), each a ``ClientSettings`` field of that name;
#: one it leaves out keeps ``ClientSettings``' default, the one home of every connection default.
CONNECTION_EXTRAS: dict[str, type] = {
    "anthropic_version": str,
    "timeout": float,
    "connect_timeout": float,
    "max_retries": int,
    "max_retry_wait": float,
    "max_requests_per_minute": int,
}


#: Idle connections outlive the longest default poll interval by half, so a wait's next round reuses
#: its connection instead of a new TLS handshake.
CLIENT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=1.5 * DEFAULT_MAX_POLL_INTERVAL
)


@cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (~30 ms CPU, ~1 MiB), and a
    triggerer runs hundreds of hooks, each with its own client, on one event loop."""
    return httpx.create_ssl_context()


def settings_from_connection(conn: Any, betas: Sequence[str] = ()) -> ClientSettings:
    """Read an ``anthropic_batches`` (or vendor ``anthropic``) connection; fail with the fix named."""
    conn_id = getattr(conn, "conn_id", "?")
    if conn.conn_type and conn.conn_type not in ACCEPTED_CONN_TYPES:
        raise ConnectionConfigError(
            f"connection {conn_id!r} has type {conn.conn_type!r}; use type {CONNECTION_TYPE!r} "
            "(or the vendor provider's 'anthropic')"
        )
    api_key = api_key_of(conn_id, conn.password or os.environ.get("ANTHROPIC_API_KEY", ""))
    extra: Mapping[str, Any] = conn.extra_dejson or {}
    vendor_kwargs = extra.get("anthropic_client_kwargs") or {}
    option = partial(_extra_option, conn_id, {**vendor_kwargs, **extra})
    conn_betas = option("betas", list) or []
    if isinstance(conn_betas, str):
        conn_betas = [beta.strip() for beta in conn_betas.split(",")]
    options = {name: option(name, kind) for name, kind in CONNECTION_EXTRAS.items()}
    given = {name: value for name, value in options.items() if value is not None}
    return ClientSettings(  # what the connection does not set keeps ClientSettings' default
        api_key=api_key,
        base_url=_base_url(conn, vendor_kwargs.get("base_url")),
        betas=tuple(dict.fromkeys([*conn_betas, *betas])),
        **given,
    )


#: What an HTTP header value can carry (RFC 9110 section 5.5, field-value): visible ASCII, with
#: spaces or tabs only inside. httpx refuses the rest, and its error text would hold the key.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20\x21-\x7e\t]*[\x21-\x7e])?")


def api_key_of(conn_id: str, raw: str) -> str:
    """The API key as sent: surrounding whitespace stripped (keys mounted from files end in a newline).

    The one place a key is read. Every form of it that could reach a log or an exception (as given,
    stripped, escaped) is registered with Airflow's secrets masker; a key that still holds a
    character a header cannot carry is refused, by a message that shows none of it.
    """
    api_key = raw.strip()
    escaped = (form for text in (raw, api_key) for form in (repr(text)[1:-1], _escaped(text)))
    for form in dict.fromkeys((raw, api_key, raw.rstrip(), raw.lstrip(), *escaped)):
        if form.strip():
            mask_secret(form)
    if not api_key:
        raise ConnectionConfigError(
            f"connection {conn_id!r} has no API key: put it in the connection's password (API Key) "
            "field or set ANTHROPIC_API_KEY"
        )
    if not _HEADER_VALUE.fullmatch(api_key):
        bad = next(char for char in api_key if not ("\x20" <= char <= "\x7e" or char == "\t"))
        raise ConnectionConfigError(
            f"connection {conn_id!r}: the API key holds a character an HTTP header cannot carry "
            f"(U+{ord(bad):04X}, {_character_kind(bad)}) inside it, so it cannot be sent. Copy the key "
            "again from the Anthropic console into the connection's password field or ANTHROPIC_API_KEY"
        )
    return api_key


def _escaped(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


def _character_kind(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return "a control character"
    return "not ASCII"


def _extra_option(conn_id: str, extra: Mapping[str, Any], name: str, kind: type) -> Any:
    """The extra ``name`` as a ``kind``, or None when the connection does not set it."""
    value = extra.get(name)
    if value is None or value == "":
        return None
    if kind is list:
        if isinstance(value, (list, str)):
            return value
        raise ConnectionConfigError(f"connection {conn_id!r}: extra {name!r} must be a list or a comma list")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ConnectionConfigError(
            f"connection {conn_id!r}: extra {name!r} must be a {kind.__name__}, got {value!r}"
        ) from None
    if kind in (int, float) and converted < 0:
        raise ConnectionConfigError(f"connection {conn_id!r}: extra {name!r} must not be negative")
    return converted


def _base_url(conn: Any, fallback: str | None) -> str:
    host = (conn.host or fallback or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    return host.rstrip("/")


class AnthropicHook(BaseHook):
    """Client for the Anthropic Messages and Message Batches API.

    :param conn_id: an ``anthropic_batches`` or ``anthropic`` connection (password: API key,
        host: base URL, extras: ``timeout``, ``max_retries``, ``max_retry_wait``, ``betas``,
        ``anthropic_version``, ``max_requests_per_minute``: the waits' request budget, 0 = none).
    :param betas: beta features sent as ``anthropic-beta`` with ``?beta=true`` on every call.
    :param transport: an httpx transport for the sync client (tests, proxies).
    :param async_transport: the same for the async client.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "anthropic_default"
    conn_type = CONNECTION_TYPE
    hook_name = "Anthropic Message Batches"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        betas: Sequence[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.betas = tuple(betas or ())
        self._transport = transport
        self._async_transport = async_transport
        self._settings: ClientSettings | None = None
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    # -- connection and clients -------------------------------------------------------------------

    def get_settings(self) -> ClientSettings:
        if self._settings is None:
            self._settings = settings_from_connection(self.get_connection(self.conn_id), self.betas)
        return self._settings

    async def aget_settings(self) -> ClientSettings:
        """Fetch the connection without blocking the triggerer's event loop."""
        if self._settings is None:
            conn = await self.aget_connection(self.conn_id)
            self._settings = settings_from_connection(conn, self.betas)
        return self._settings

    def get_conn(self) -> httpx.Client:
        if self._client is None:
            settings = self.get_settings()
            self._client = httpx.Client(
                timeout=settings.httpx_timeout(),
                limits=CLIENT_LIMITS,
                verify=shared_ssl_context(),
                transport=self._transport,
            )
        return self._client

    async def aget_conn(self) -> httpx.AsyncClient:
        if self._async_client is None:
            settings = await self.aget_settings()
            self._async_client = httpx.AsyncClient(
                timeout=settings.httpx_timeout(),
                limits=CLIENT_LIMITS,
                verify=shared_ssl_context(),
                transport=self._async_transport,
            )
        return self._async_client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    # -- plans ------------------------------------------------------------------------------------

    def run_plan(self, plan: PlanFactory[T], *, budget: bool = False) -> T:
        """Run a plan (see :mod:`~airflow_provider_batches.client_core`) with this hook's settings and
        client, blocking: every endpoint method, and the wait in the worker, goes through here.
        ``budget``: pace its sends by the connection's request budget (waits do)."""
        settings = self.get_settings()
        return run_sync(self._paced(plan(settings), settings, budget), self.get_conn())

    async def arun_plan(self, plan: PlanFactory[T], *, budget: bool = False) -> T:
        """:meth:`run_plan` on the event loop (the triggerer), with the async client."""
        settings = await self.aget_settings()
        return await run_async(self._paced(plan(settings), settings, budget), await self.aget_conn())

    @staticmethod
    def _paced(plan: Plan[T], settings: ClientSettings, budget: bool) -> Plan[T]:
        return budgeted(plan, shared_budget(settings)) if budget else plan

    @staticmethod
    def budget_rate(settings: ClientSettings) -> int:
        """Requests a minute the waits of ``settings``' key may spend in this process (0: no limit):
        the rate the runner paces them at, for a caller that plans its own cadence (the poller)."""
        budget = shared_budget(settings)
        return budget.requests_per_minute if budget is not None else 0

    # -- waiting ----------------------------------------------------------------------------------

    def wait_for_batches(
        self, batch_ids: Sequence[str], spec: WaitSpec, *, log: logging.Logger | None = None
    ) -> dict[str, dict[str, int]]:
        """Block until every batch has ended, polling as ``spec`` says: the wait in the worker (deferred,
        the trigger waits the same way on the connection's shared poller). Paced by the connection's
        request budget; progress lines go to ``log`` (the task's), else the hook's.

        Returns each batch's final counts; a wait that times out raises
        :class:`~airflow_provider_batches.errors.BatchTimeoutError`, one that cannot go on
        :class:`~airflow_provider_batches.errors.BatchWaitError`.
        """
        plan = partial(wait_plan, batch_ids=batch_ids, spec=spec, log=log or self.log)
        return raise_for_wait_event(self.run_plan(plan, budget=True))

    # -- messages ---------------------------------------------------------------------------------

    def create_message(self, params: Mapping[str, Any], *, betas: Sequence[str] | None = None) -> Message:
        """``POST /v1/messages``: one synchronous (full price) message."""
        return self.run_plan(_parsed(Message, Call("POST", "/v1/messages", json_body=params, betas=betas)))

    async def acreate_message(
        self, params: Mapping[str, Any], *, betas: Sequence[str] | None = None
    ) -> Message:
        return await self.arun_plan(
            _parsed(Message, Call("POST", "/v1/messages", json_body=params, betas=betas))
        )

    def count_tokens(self, params: Mapping[str, Any], *, betas: Sequence[str] | None = None) -> int:
        """``POST /v1/messages/count_tokens``: input tokens of one request (free; other params dropped)."""
        return self.run_plan(_count_tokens_call(params, betas)).input_tokens

    async def acount_tokens(self, params: Mapping[str, Any], *, betas: Sequence[str] | None = None) -> int:
        return (await self.arun_plan(_count_tokens_call(params, betas))).input_tokens

    # -- batches ----------------------------------------------------------------------------------

    def create_batch(
        self,
        requests: Sequence[Mapping[str, Any]] | bodies.BatchBody,
        *,
        betas: Sequence[str] | None = None,
        watermark: CreateWatermark | None = None,
        exclude: Iterable[str] = (),
        look_up_lost: bool = True,
    ) -> MessageBatch:
        """``POST /v1/messages/batches``. Never sends twice: a lost answer is looked up, not resent.

        The lookup only adopts a batch listed newer than ``watermark`` (taken just before the call when
        not given), of the same size and not in ``exclude``; see :meth:`find_created_batch`. With
        ``look_up_lost=False`` a lost answer raises
        :class:`~airflow_provider_batches.errors.CreateAnswerLostError` instead (nothing adopted).
        """
        return self.run_plan(_create_batch(requests, betas, watermark, exclude, look_up_lost, to_async=False))

    async def acreate_batch(
        self,
        requests: Sequence[Mapping[str, Any]] | bodies.BatchBody,
        *,
        betas: Sequence[str] | None = None,
        watermark: CreateWatermark | None = None,
        exclude: Iterable[str] = (),
    ) -> MessageBatch:
        return await self.arun_plan(_create_batch(requests, betas, watermark, exclude, True, to_async=True))

    def get_batch(self, batch_id: str, *, betas: Sequence[str] | None = None) -> MessageBatch:
        """``GET /v1/messages/batches/{id}``: idempotent, meant for polling."""
        return self.run_plan(partial(get_batch_plan, batch_id=batch_id, betas=betas))

    async def aget_batch(self, batch_id: str, *, betas: Sequence[str] | None = None) -> MessageBatch:
        return await self.arun_plan(partial(get_batch_plan, batch_id=batch_id, betas=betas))

    def list_batches(
        self,
        *,
        limit: int = 20,
        before_id: str | None = None,
        after_id: str | None = None,
        betas: Sequence[str] | None = None,
    ) -> MessageBatchPage:
        """One page of ``GET /v1/messages/batches``, newest first."""
        return self.run_plan(
            partial(list_page_plan, limit=limit, before_id=before_id, after_id=after_id, betas=betas)
        )

    async def alist_batches(
        self,
        *,
        limit: int = 20,
        before_id: str | None = None,
        after_id: str | None = None,
        betas: Sequence[str] | None = None,
    ) -> MessageBatchPage:
        return await self.arun_plan(
            partial(list_page_plan, limit=limit, before_id=before_id, after_id=after_id, betas=betas)
        )

    def iter_batches(
        self, *, page_size: int = 100, betas: Sequence[str] | None = None
    ) -> Iterator[MessageBatch]:
        """Every batch of the workspace, newest first, one page request at a time."""
        after_id: str | None = None
        while True:
            page = self.list_batches(limit=page_size, after_id=after_id, betas=betas)
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            after_id = page.last_id

    async def aiter_batches(
        self, *, page_size: int = 100, betas: Sequence[str] | None = None
    ) -> AsyncIterator[MessageBatch]:
        after_id: str | None = None
        while True:
            page = await self.alist_batches(limit=page_size, after_id=after_id, betas=betas)
            for batch in page.data:
                yield batch
            if not page.has_more or not page.last_id:
                return
            after_id = page.last_id

    def cancel_batch(self, batch_id: str, *, betas: Sequence[str] | None = None) -> MessageBatch:
        """``POST /v1/messages/batches/{id}/cancel``: the batch moves to ``canceling``."""
        return self.run_plan(
            _about(batch_id, MessageBatch, Call("POST", batches_path(batch_id, "cancel"), betas=betas))
        )

    async def acancel_batch(self, batch_id: str, *, betas: Sequence[str] | None = None) -> MessageBatch:
        return await self.arun_plan(
            _about(batch_id, MessageBatch, Call("POST", batches_path(batch_id, "cancel"), betas=betas))
        )

    def delete_batch(self, batch_id: str, *, betas: Sequence[str] | None = None) -> DeletedMessageBatch:
        """``DELETE /v1/messages/batches/{id}``: only once the batch has ended."""
        return self.run_plan(
            _about(batch_id, DeletedMessageBatch, Call("DELETE", batches_path(batch_id), betas=betas))
        )

    async def adelete_batch(
        self, batch_id: str, *, betas: Sequence[str] | None = None
    ) -> DeletedMessageBatch:
        return await self.arun_plan(
            _about(batch_id, DeletedMessageBatch, Call("DELETE", batches_path(batch_id), betas=betas))
        )

    def create_watermark(self, *, betas: Sequence[str] | None = None) -> CreateWatermark:
        """The newest batch listed now: take it right before a paid create, to find a lost answer's batch."""
        return self.run_plan(partial(create_watermark_plan, betas=betas))

    def find_created_batch(
        self,
        watermark: CreateWatermark,
        request_count: int,
        *,
        exclude: Iterable[str] = (),
        reason: str = "its answer was lost",
        betas: Sequence[str] | None = None,
    ) -> MessageBatch | None:
        """The one batch a lost create made after ``watermark``, or None; any doubt raises
        :class:`~airflow_provider_batches.errors.BatchCreateUncertainError`."""
        return self.run_plan(
            partial(
                find_created_batch_plan,
                watermark=watermark,
                request_count=request_count,
                exclude=tuple(exclude),
                reason=reason,
                betas=betas,
            )
        )

    # -- models -----------------------------------------------------------------------------------

    def get_model(self, model_id: str) -> ModelInfo:
        """What ``model_id`` accepts (free): limits, capabilities, lifecycle; ``NotFoundError`` if unknown."""
        return self.run_plan(partial(get_model_plan, model_id=model_id))

    def list_models(self, *, max_pages: int = 10) -> list[ModelInfo]:
        """Every model the API lists (free), newest first, retired ones included."""
        models: list[ModelInfo] = []
        after_id: str | None = None
        for _ in range(max_pages):
            page = self.run_plan(partial(list_models_page_plan, after_id=after_id))
            models += page.data
            if not (page.has_more and page.last_id):
                break
            after_id = page.last_id
        return models

    def create_candidates(
        self,
        watermark: CreateWatermark,
        request_count: int,
        *,
        exclude: Iterable[str] = (),
        until: CreateWatermark | None = None,
        betas: Sequence[str] | None = None,
    ) -> CreateCandidates:
        """The batches a lost create may have made (see
        :func:`~airflow_provider_batches.client_core.create_candidates_plan`): none of them is proven."""
        return self.run_plan(
            partial(
                create_candidates_plan,
                watermark=watermark,
                request_count=request_count,
                exclude=tuple(exclude),
                until=until,
                betas=betas,
            )
        )

    # -- results ----------------------------------------------------------------------------------

    @staticmethod
    def check_results_ready(batches: Sequence[MessageBatch]) -> None:
        """Raise :class:`~airflow_provider_batches.errors.BatchNotReadyError` naming every batch whose
        results cannot be downloaded (the rule's home: :mod:`airflow_provider_batches.policy`)."""
        check_results_ready(batches)

    def iter_results_bytes(
        self,
        batch: MessageBatch | str,
        *,
        chunk_size: int | None = 1 << 16,
        betas: Sequence[str] | None = None,
    ) -> Iterator[bytes]:
        """The raw JSONL bytes from the batch's ``results_url``, streamed: for copying without parsing."""
        if isinstance(batch, str):
            batch = self.get_batch(batch, betas=betas)
        response = self.run_plan(_results_call(batch, betas))
        try:
            yield from response.iter_bytes(chunk_size)
        except httpx.TransportError as exc:
            raise _stream_broken(batch, exc) from exc
        finally:
            response.close()

    async def aiter_results_bytes(
        self,
        batch: MessageBatch | str,
        *,
        chunk_size: int | None = 1 << 16,
        betas: Sequence[str] | None = None,
    ) -> AsyncIterator[bytes]:
        if isinstance(batch, str):
            batch = await self.aget_batch(batch, betas=betas)
        response = await self.arun_plan(_results_call(batch, betas))
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except httpx.TransportError as exc:
            raise _stream_broken(batch, exc) from exc
        finally:
            await response.aclose()

    def iter_results(
        self, batch: MessageBatch | str, *, betas: Sequence[str] | None = None
    ) -> Iterator[BatchResult]:
        """Parsed result lines, streamed: for reading results in Python."""
        splitter = LineSplitter()
        for chunk in self.iter_results_bytes(batch, betas=betas):
            for line in splitter.feed(chunk):
                yield _result_line(line)
        for line in splitter.flush():
            yield _result_line(line)

    async def aiter_results(
        self, batch: MessageBatch | str, *, betas: Sequence[str] | None = None
    ) -> AsyncIterator[BatchResult]:
        splitter = LineSplitter()
        async for chunk in self.aiter_results_bytes(batch, betas=betas):
            for line in splitter.feed(chunk):
                yield _result_line(line)
        for line in splitter.flush():
            yield _result_line(line)

    # -- connection test --------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """One cheap, free call (a one-item batch listing) that proves the URL and the key."""
        try:
            settings = self.get_settings()
            self.list_batches(limit=1)
        except AnthropicBatchesError as exc:
            return False, str(exc)
        return True, f"Connected to {settings.base_url}: the API key was accepted."


# -- plan factories shared by the sync and async methods -----------------------------------------


def _parsed(model: type[M], call: Call) -> PlanFactory[M]:
    return partial(model_plan, model=model, call=call)


def _about(batch_id: str, model: type[M], call: Call) -> PlanFactory[M]:
    """A call about one batch: the answer must be about that batch."""
    return partial(same_batch_plan, model=model, call=call, asked=batch_id)


def _count_tokens_call(params: Mapping[str, Any], betas: Sequence[str] | None) -> PlanFactory[TokenCount]:
    body = {key: value for key, value in params.items() if key in COUNTED_PARAMS}
    return _parsed(TokenCount, Call("POST", "/v1/messages/count_tokens", json_body=body, betas=betas))


def _create_batch(
    requests: Sequence[Mapping[str, Any]] | bodies.BatchBody,
    betas: Sequence[str] | None,
    watermark: CreateWatermark | None,
    exclude: Iterable[str],
    look_up_lost: bool,
    *,
    to_async: bool,
) -> PlanFactory[MessageBatch]:
    if isinstance(requests, bodies.BatchBody):
        chunks = requests.chunks
        body: Callable[[], Any] = (lambda: as_async_chunks(chunks())) if to_async else chunks
        call = Call("POST", batches_path(), body=body, betas=betas, idempotent=False)
        count = requests.request_count
    else:
        call = Call(
            "POST", batches_path(), json_body={"requests": list(requests)}, betas=betas, idempotent=False
        )
        count = len(requests)
    return partial(
        create_batch_plan,
        call=call,
        request_count=count,
        watermark=watermark,
        exclude=tuple(exclude),
        look_up_lost=look_up_lost,
    )


def _result_line(line: bytes) -> BatchResult:
    """One results line, its custom_id checked for its shape; UnexpectedAnswerError when it is not one."""
    try:
        return BatchResult.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(line)"
        raise UnexpectedAnswerError(f"a results line is not a result ({where}: {first['msg']})") from None


def _results_call(batch: MessageBatch, betas: Sequence[str] | None) -> PlanFactory[httpx.Response]:
    check_results_ready([batch])
    results_url = batch.results_url
    assert results_url is not None  # checked just above

    def plan(settings: ClientSettings) -> Plan[httpx.Response]:
        url = check_results_origin(settings.base_url, results_url)
        return request_plan(settings, Call("GET", url, betas=betas, stream=True))

    return plan


def _stream_broken(batch: MessageBatch, exc: httpx.TransportError) -> APIConnectionError:
    return APIConnectionError(
        f"the results stream of batch {batch.id} broke off ({type(exc).__name__}); "
        "download it again from the start"
    )
