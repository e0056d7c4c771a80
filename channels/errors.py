"""One error type for everything a caller can be told, with a closed set of codes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every error code a client can see, on a socket ack, a connect_error or a REST problem."""

    BAD_REQUEST = "bad_request"
    PERMISSION_DENIED = "permission_denied"
    INVALID_CHANNEL = "invalid_channel"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_SUBSCRIBED = "not_subscribed"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # authentication (connect_error data, REST 401)
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    # REST only
    NOT_FOUND = "not_found"
    # limits (promise 6): the call or connection was refused, the connection survives
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    # why the server closed a connection (``closing`` event)
    SLOW_CONSUMER = "slow_consumer"
    DISCONNECTED_BY_SERVER = "disconnected_by_server"
    SHUTDOWN = "shutdown"


class AppError(Exception):
    """An error meant for the caller: a code from ``ErrorCode`` and a human message.

    ``temporary`` tells the caller a retry may succeed (the store or broker was
    unreachable); a permanent error will fail again with the same input.
    ``retry_after`` (seconds) says when a rate-limited call may succeed again.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, temporary: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary or retry_after is not None
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """``{code, message}``, plus ``retry_after`` (seconds, 3 decimals) when set."""
        out: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.retry_after is not None:
            out["retry_after"] = round(self.retry_after, 3)
        return out


class StoreUnavailable(AppError):
    """The event store could not be reached or the transaction failed; nothing was committed."""

    def __init__(self, message: str = "event store unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, temporary=True)


class BrokerUnavailable(AppError):
    """The broker could not be reached."""

    def __init__(self, message: str = "broker unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, temporary=True)


class PresenceUnavailable(AppError):
    """The presence backend could not be reached."""

    def __init__(self, message: str = "presence backend unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, temporary=True)


def describe(exc: BaseException) -> str:
    """What failed and why, for an error message or log line: ``"Type: message"``, or the
    type alone when the message is empty (``TimeoutError()`` prints as nothing)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
