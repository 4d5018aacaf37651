"""Pydantic models of the API's objects.

Permissive on purpose: the API adds fields, content block types and result types over time, and a
results file that took hours to produce must never fail to parse because of that. Unknown fields
are kept (``extra="allow"``), unknown block and result types parse to generic models that keep
their data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Tag

from airflow_provider_batches.batch_ids import check_batch_id, check_custom_id

#: Ids the API answers are checked for their documented shape as they are parsed (see
#: :mod:`.batch_ids`): they go into URL paths, object names and log lines.
BatchId = Annotated[str, AfterValidator(check_batch_id)]
CustomId = Annotated[str, AfterValidator(check_custom_id)]


class APIModel(BaseModel):
    """Base of every API object: keeps unknown fields, ignores nothing."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# -- Messages ---------------------------------------------------------------------------------------


class TextBlock(APIModel):
    type: Literal["text"] = "text"
    text: str
    citations: list[dict[str, Any]] | None = None


class ThinkingBlock(APIModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(APIModel):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class ToolUseBlock(APIModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: Any = None


class UnknownBlock(APIModel):
    """A block type this version does not know (server tools, future types): data is kept."""

    type: str


def _tag_known(known: frozenset[str]) -> Callable[[Any], str]:
    """A discriminator: the value's ``type`` when it is one of ``known``, else ``"unknown"``."""

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kind if kind in known else "unknown"

    return tag


_block_tag = _tag_known(frozenset({"text", "thinking", "redacted_thinking", "tool_use"}))


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[UnknownBlock, Tag("unknown")],
    Discriminator(_block_tag),
]


class Usage(APIModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: dict[str, Any] | None = None
    server_tool_use: dict[str, Any] | None = None
    service_tier: str | None = None


class Message(APIModel):
    id: str
    type: str = "message"
    role: str = "assistant"
    content: list[ContentBlock] = []
    model: str
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = Usage()

    @property
    def text(self) -> str:
        """The concatenated text blocks: what most pipelines want from an answer."""
        return "".join(block.text for block in self.content if isinstance(block, TextBlock))


class TokenCount(APIModel):
    input_tokens: int


# -- Errors inside results ------------------------------------------------------------------------


class ErrorDetail(APIModel):
    type: str
    message: str = ""


class ErrorResponse(APIModel):
    type: str = "error"
    error: ErrorDetail
    request_id: str | None = None


# -- Batches --------------------------------------------------------------------------------------

ProcessingStatus = Literal["in_progress", "canceling", "ended"]


class RequestCounts(APIModel):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in COUNT_FIELDS)

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.model_dump().items() if isinstance(v, int)}


#: The result-type vocabulary, defined once by :class:`RequestCounts`: every count it holds, and
#: the types a finished request can have (all but ``processing``).
COUNT_FIELDS: tuple[str, ...] = tuple(RequestCounts.model_fields)
RESULT_TYPES: tuple[str, ...] = tuple(name for name in COUNT_FIELDS if name != "processing")


class MessageBatch(APIModel):
    id: BatchId
    type: str = "message_batch"
    processing_status: str
    request_counts: RequestCounts = RequestCounts()
    created_at: datetime
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    archived_at: datetime | None = None
    results_url: str | None = None

    @property
    def is_ended(self) -> bool:
        return self.processing_status == "ended"


class MessageBatchPage(APIModel):
    data: list[MessageBatch] = []
    first_id: BatchId | None = None
    last_id: BatchId | None = None
    has_more: bool = False


class ModelInfo(APIModel):
    """``GET /v1/models/{id}``: what a model accepts (the official SDK's ``ModelInfo``, 2.17).

    ``capabilities`` is kept as a plain mapping (``capabilities["batch"]["supported"]``): its keys grow
    with the API and are read one by one, each defaulting to "no objection" when absent.
    """

    id: str
    type: str = "model"
    display_name: str = ""
    created_at: datetime | None = None
    lifecycle: str = "active"
    deprecated_at: datetime | None = None
    retires_at: datetime | None = None
    max_input_tokens: int | None = None
    max_tokens: int | None = None
    capabilities: dict[str, Any] | None = None

    def supports(self, *path: str) -> bool | None:
        """``capabilities[path...]["supported"]``; None when the API did not say."""
        node: Any = self.capabilities
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get("supported") if isinstance(node, dict) else None
        return value if isinstance(value, bool) else None


class ModelPage(APIModel):
    data: list[ModelInfo] = []
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class DeletedMessageBatch(APIModel):
    id: BatchId
    type: str = "message_batch_deleted"


# -- Result lines ---------------------------------------------------------------------------------


class SucceededResult(APIModel):
    type: Literal["succeeded"] = "succeeded"
    message: Message


class ErroredResult(APIModel):
    type: Literal["errored"] = "errored"
    error: ErrorResponse


class CanceledResult(APIModel):
    type: Literal["canceled"] = "canceled"


class ExpiredResult(APIModel):
    type: Literal["expired"] = "expired"


class UnknownResult(APIModel):
    """A result type this version does not know: data is kept, counting still works."""

    type: str


_result_tag = _tag_known(frozenset(RESULT_TYPES))


Result = Annotated[
    Annotated[SucceededResult, Tag("succeeded")]
    | Annotated[ErroredResult, Tag("errored")]
    | Annotated[CanceledResult, Tag("canceled")]
    | Annotated[ExpiredResult, Tag("expired")]
    | Annotated[UnknownResult, Tag("unknown")],
    Discriminator(_result_tag),
]


class BatchResult(APIModel):
    """One line of a results file."""

    custom_id: CustomId
    result: Result
