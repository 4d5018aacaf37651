"""AnthropicCountTokensOperator: what a job will cost, checked against a budget before any spend."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_batches.errors import BudgetExceededError, RateLimitError, RequestValidationError
from airflow_provider_batches.hooks.anthropic import AnthropicHook
from airflow_provider_batches.pricing import BATCH_DISCOUNT, Price, price_for, require_prices, usage_cost_usd
from airflow_provider_batches.requests import RequestSource
from airflow_provider_batches.structured_output import OutputSchema, StructuredOutput, with_output_schema


@dataclass
class TokenTally:
    """Running totals of a count, per model."""

    requests: int = 0
    input_tokens: Counter[str] = field(default_factory=Counter)
    max_output_tokens: Counter[str] = field(default_factory=Counter)
    #: Of those, the requests a model's long-context tier prices (their prompt is over its threshold).
    long_input_tokens: Counter[str] = field(default_factory=Counter)
    long_max_output_tokens: Counter[str] = field(default_factory=Counter)

    def add(self, model: str, input_tokens: int, max_tokens: int, *, long_context: bool = False) -> None:
        self.requests += 1
        self.input_tokens[model] += input_tokens
        self.max_output_tokens[model] += max_tokens
        if long_context:
            self.long_input_tokens[model] += input_tokens
            self.long_max_output_tokens[model] += max_tokens

    def cost(self, model: str, price: Price) -> tuple[float, float]:
        """Input cost and output cost at most, each tier priced as such (:func:`usage_cost_usd`)."""
        costs = []
        for totals, long_totals in (
            (self.input_tokens, self.long_input_tokens),
            (self.max_output_tokens, self.long_max_output_tokens),
        ):
            is_input = totals is self.input_tokens
            cost = 0.0
            for long_context, tokens in (
                (False, totals[model] - long_totals[model]),
                (True, long_totals[model]),
            ):
                cost += usage_cost_usd(
                    price,
                    input_tokens=tokens if is_input else 0,
                    output_tokens=0 if is_input else tokens,
                    long_context=long_context,
                )
            costs.append(cost)
        return costs[0], costs[1]


class AnthropicCountTokensOperator(BaseOperator):
    """Count the input tokens of one request or a whole batch job, estimate its batch cost, guard a budget.

    Give either one request (``messages``, ``model``, optional ``system``, ``tools``, ``max_tokens``)
    or a job (``requests`` or ``requests_path``, as for AnthropicCreateBatchOperator). Counting is
    free and has its own rate limit: requests are counted ``max_concurrency`` at a time, pausing
    together when the API answers 429.

    The estimate is the batch price (50 % of standard) of the input tokens, plus ``max_tokens`` of
    output per request as the upper bound on output. The task fails before anything is spent when
    ``max_input_tokens`` or ``max_cost_usd`` (compared with input cost plus that output bound) is
    exceeded. Prices come from :mod:`airflow_provider_batches.pricing` (exact model ids); add or override
    them with ``prices={"claude-sonnet-4-6": {"input": 3.0, "output": 15.0}}`` (standard USD per million
    tokens). With ``max_cost_usd``, a model with no price fails the task, naming it and that fix.
    Give the create operator's ``output_schema`` too: requests are counted with it, as they will be sent.

    Returns (XCom) ``request_count``, ``input_tokens``, ``input_tokens_per_model``,
    ``max_output_tokens``, ``estimated_cost_usd`` (``input``, ``output_max``, ``total_max``, or None
    when a model has no price) and ``unpriced_models``.
    """

    template_fields: Sequence[str] = (
        "messages",
        "model",
        "system",
        "requests",
        "requests_path",
        "requests_conn_id",
        "max_input_tokens",
        "max_cost_usd",
    )
    ui_color = "#f0e4d8"

    def __init__(
        self,
        *,
        messages: list[dict[str, Any]] | None = None,
        model: str | None = None,
        system: str | list[dict[str, Any]] | None = None,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        requests: list[dict[str, Any]] | None = None,
        requests_path: str | None = None,
        requests_conn_id: str | None = None,
        conn_id: str = AnthropicHook.default_conn_name,
        max_concurrency: int = 8,
        max_input_tokens: int | None = None,
        max_cost_usd: float | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        betas: list[str] | None = None,
        rate_limit_timeout: float = 900.0,
        output_schema: OutputSchema | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_schema = None if output_schema is None else StructuredOutput.of(output_schema)
        if messages is not None and (requests is not None or requests_path is not None):
            raise ValueError("give either messages (one request) or requests/requests_path (a job), not both")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.messages = messages
        self.model = model
        self.system = system
        self.tools = tools
        self.max_tokens = max_tokens
        self.requests = requests
        self.requests_path = requests_path
        self.requests_conn_id = requests_conn_id
        self.conn_id = conn_id
        self.max_concurrency = max_concurrency
        self.max_input_tokens = max_input_tokens
        self.max_cost_usd = max_cost_usd
        self.prices = prices
        self.betas = betas
        self.rate_limit_timeout = rate_limit_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        source = with_output_schema(self._source(), self.output_schema)  # counted as it will be sent
        hook = AnthropicHook(self.conn_id, betas=self.betas)
        hook.get_settings()  # the connection is read once, before the event loop starts
        tally = asyncio.run(self._count(hook, source))
        summary = self._summary(tally)
        self.log.info(
            "%d requests: %d input tokens %s; estimated batch cost %s",
            summary["request_count"],
            summary["input_tokens"],
            summary["input_tokens_per_model"],
            summary["estimated_cost_usd"],
        )
        self._check_budget(summary)
        return summary

    def _source(self) -> RequestSource:
        if self.messages is None:
            return RequestSource(
                requests=self.requests,
                requests_path=self.requests_path,
                requests_conn_id=self.requests_conn_id,
                model=self.model,
            )
        params: dict[str, Any] = {"messages": self.messages, "max_tokens": self.max_tokens or 1}
        for name, value in (("model", self.model), ("system", self.system), ("tools", self.tools)):
            if value is not None:
                params[name] = value
        return RequestSource(requests=[{"custom_id": "request", "params": params}])

    async def _count(self, hook: AnthropicHook, source: RequestSource) -> TokenTally:
        tally = TokenTally()
        limiter = _RateLimitPause(self.rate_limit_timeout)

        async def count_one(params: dict[str, Any]) -> None:
            tokens = await limiter.call(lambda: hook.acount_tokens(params, betas=self.betas))
            max_tokens = params["max_tokens"] if self.messages is None else (self.max_tokens or 0)
            price = price_for(params["model"], self.prices)
            long_context = price is not None and price.is_long_context(tokens)
            tally.add(params["model"], tokens, max_tokens, long_context=long_context)

        pending: set[asyncio.Task[None]] = set()
        requests = _pulled_in_thread(source.iter_requests(), self.max_concurrency)
        try:
            async for request in requests:
                if len(pending) >= self.max_concurrency:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # the first failure stops the count
                pending.add(asyncio.create_task(count_one(request["params"])))
            await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()
            await requests.aclose()
            await hook.aclose()
        return tally

    def _summary(self, tally: TokenTally) -> dict[str, Any]:
        if tally.requests == 0:
            raise RequestValidationError("no requests to count")
        input_cost = output_cost = 0.0
        unpriced = []
        for model in sorted(tally.input_tokens):
            price = price_for(model, self.prices)
            if price is None:
                unpriced.append(model)
                continue
            model_input, model_output = tally.cost(model, price)
            input_cost += model_input
            output_cost += model_output
        cost = None
        if not unpriced:
            cost = {
                "input": round(input_cost, 6),
                "output_max": round(output_cost, 6),
                "total_max": round(input_cost + output_cost, 6),
            }
        return {
            "request_count": tally.requests,
            "input_tokens": sum(tally.input_tokens.values()),
            "input_tokens_per_model": dict(sorted(tally.input_tokens.items())),
            "max_output_tokens": sum(tally.max_output_tokens.values()),
            "estimated_cost_usd": cost,
            "unpriced_models": unpriced,
            "batch_discount": BATCH_DISCOUNT,
        }

    def _check_budget(self, summary: dict[str, Any]) -> None:
        if self.max_input_tokens is not None and summary["input_tokens"] > int(self.max_input_tokens):
            raise BudgetExceededError(
                f"the job has {summary['input_tokens']:,} input tokens, over max_input_tokens="
                f"{int(self.max_input_tokens):,}; nothing was submitted"
            )
        if self.max_cost_usd is None:
            return
        require_prices(summary["unpriced_models"], self.prices)  # raises, naming each model and prices=
        cost = summary["estimated_cost_usd"]
        if cost["total_max"] > float(self.max_cost_usd):
            raise BudgetExceededError(
                f"the job may cost up to ${cost['total_max']:,.2f} (input ${cost['input']:,.2f} plus "
                f"at most ${cost['output_max']:,.2f} of output at max_tokens), over "
                f"max_cost_usd={float(self.max_cost_usd):,.2f}; nothing was submitted"
            )


async def _pulled_in_thread(
    iterator: Iterator[dict[str, Any]], chunk: int
) -> AsyncGenerator[dict[str, Any], None]:
    """The items of a blocking iterator, read ``chunk`` at a time in a worker thread.

    Reading object storage blocks, and some filesystems run an event loop of their own (the Amazon
    provider's S3 calls ``asyncio.run`` when it connects), so the source is never read on this loop.
    At most ``chunk`` items are held at once: the source still streams.
    """
    try:
        while items := await asyncio.to_thread(lambda: list(itertools.islice(iterator, chunk))):
            for item in items:
                yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await asyncio.to_thread(close)  # closes the source file off the loop too


class _RateLimitPause:
    """Makes every worker wait together once the API says 429, until a deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.resume_at = 0.0

    async def call(self, make_call: Any) -> int:
        deadline = time.monotonic() + self.timeout
        backoff = 1.0
        while True:
            if (wait := self.resume_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            try:
                return int(await make_call())
            except RateLimitError as exc:
                if time.monotonic() >= deadline:
                    raise
                pause = exc.retry_after or backoff
                backoff = min(backoff * 2, 30.0)
                self.resume_at = max(self.resume_at, time.monotonic() + pause)
