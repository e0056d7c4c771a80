"""Pydantic wire models: what clients send and what they get back.

Inputs are strict (no "5" -> 5 or false -> 0 coercion, on sockets and in REST
bodies alike, so that what the OpenAPI document calls invalid is refused; only the
REST query models coerce, as a query string is text) and forbid unknown fields,
so malformed calls fail with ``bad_request`` naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from channels.models import MAX_SEQ

# pydantic matches patterns with Rust's regex, whose '$' is the end of the text (not
# also before a final newline, as in Python's re): "t\n" is refused.
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
# any characters but control characters (a newline in an id would split log lines)
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


def _json_integer(value: object) -> object:
    """JSON Schema's ``integer`` is a number without a fraction, so 3.0 is one (some
    JSON encoders write every number so); true and false stay refused (strict models)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# a seq in a REST body, where the OpenAPI document is the contract
JsonSeq = Annotated[Seq, BeforeValidator(_json_integer)]
Limit = Annotated[int, Field(ge=1, le=10_000)]
# as answered by subscribe, sync and history ("" while a channel has no history)
Epoch = Annotated[str, StringConstraints(max_length=64)]
EPOCH_TEXT = ("names the channel's history: a seq is a position only together with its epoch, "
              "which changes when the history cannot continue (a restore, a reset); "
              "empty while the channel has no history")


class _SocketIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SubscribeIn(_SocketIn):
    channel: str
    since: Seq | None = None
    # the epoch ``since`` was read in; without it ``since`` is trusted as it is
    epoch: Epoch | None = None


class UnsubscribeIn(_SocketIn):
    channel: str


class PublishIn(_SocketIn):
    channel: str
    type: EventType
    data: dict[str, Any]
    client_msg_id: ClientMsgId | None = None


class PresenceIn(_SocketIn):
    channel: str


class RefreshIn(_SocketIn):
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class HistoryIn(_SocketIn):
    channel: str
    after: Seq | None = None
    before: Annotated[int, Field(ge=1, le=MAX_SEQ)] | None = None
    limit: Limit = 100


# -- REST ------------------------------------------------------------------


class PublishBody(BaseModel):
    """``POST /channels/{channel}/events``; the ``Idempotency-Key`` header may carry ``client_msg_id``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: EventType
    data: dict[str, Any]
    client_msg_id: ClientMsgId | None = None


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: Seq | None = None
    before: Annotated[int, Field(ge=1, le=MAX_SEQ)] | None = None
    limit: Limit = 100


class SyncBody(BaseModel):
    """``POST /sync``: the last seq the client holds for each channel (0 for none)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    channels: dict[str, JsonSeq]
    epochs: dict[str, Epoch] = Field(
        default_factory=dict,
        description="the epoch each position in channels was read in (from an earlier answer); "
                    "a position from another epoch is answered with recovered: false. "
                    "Channels left out are trusted as before epochs existed; an entry for a channel not in channels is ignored",
    )


class EventOut(BaseModel):
    id: str
    channel: str
    seq: int
    type: str
    data: dict[str, Any]
    sender: str
    ts: int
    client_msg_id: str | None = None


class PublishOut(BaseModel):
    seq: int
    id: str
    duplicate: bool


class HistoryOut(BaseModel):
    events: list[EventOut]
    head: int
    first: int = Field(description="lowest seq still retained; older events were pruned")
    next_after: int | None = Field(description="pass as ?after= for the next page; null at the head")
    epoch: str = Field(description=EPOCH_TEXT + "; a page with another epoch than the previous one is "
                                   "from another history: start over")


class SyncChannelOut(BaseModel):
    events: list[EventOut]
    head: int
    recovered: bool = Field(description="false: the position was pruned, ahead of the head or of another "
                                        "epoch; events start at the oldest kept (drop what you hold)")
    has_more: bool
    epoch: str = Field(description=EPOCH_TEXT + "; send it back in epochs with the next position")


class SyncOut(BaseModel):
    channels: dict[str, SyncChannelOut]


class PresenceMemberOut(BaseModel):
    user: str
    connections: int = Field(description="this user's connections joined to the channel, all instances")
    info: dict[str, Any] = Field(description="the 'info' claim of the user's token")


class PresenceOut(BaseModel):
    channel: str
    members: list[PresenceMemberOut]


# -- server-to-server API (tokens with role: server) ------------------------------


class BatchEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    channel: str
    type: EventType
    data: dict[str, Any]
    client_msg_id: ClientMsgId | None = None


class BatchPublishBody(BaseModel):
    """``POST /server/publish``: events in the order they are to be committed."""

    model_config = ConfigDict(extra="forbid", strict=True)
    events: list[BatchEventIn]


class ErrorOut(BaseModel):
    code: str
    message: str


class BatchResultOut(BaseModel):
    ok: bool
    channel: str
    seq: int | None = None
    id: str | None = None
    duplicate: bool | None = None
    error: ErrorOut | None = None


class BatchPublishOut(BaseModel):
    results: list[BatchResultOut]


class DisconnectOut(BaseModel):
    user: str
    sent: bool = Field(description="the command went to every instance connected to the broker")


class ChannelStatsOut(BaseModel):
    channel: str
    head: int
    first: int
    subscribers: int = Field(description="subscribed connections on every instance")
    users: int = Field(description="distinct users among the subscribers")


class Problem(BaseModel):
    """``application/problem+json`` (RFC 9457) with Switchboard's error ``code``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    retry_after: float | None = Field(default=None, description="rate_limited: seconds until a retry may succeed")


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str = Field(description="ok, or unavailable")
    checks: dict[str, str] = Field(description="store and broker: ok, or why not")
