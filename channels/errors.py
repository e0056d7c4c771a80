"""One error type for everything a caller can be told, with a closed set of codes."""

from __future__ import annotations

from enum import StrEnum


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


class AppError(Exception):
    """An error meant for the caller: a code from ``ErrorCode`` and a human message.

    ``temporary`` tells the caller a retry may succeed (the store or broker was
    unreachable); a permanent error will fail again with the same input.
    """

    def __init__(self, code: ErrorCode, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


class StoreUnavailable(AppError):
    """The event store could not be reached or the transaction failed; nothing was committed."""

    def __init__(self, message: str = "event store unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, temporary=True)


class BrokerUnavailable(AppError):
    """The broker could not be reached."""

    def __init__(self, message: str = "broker unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, temporary=True)
