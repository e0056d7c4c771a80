"""Channel names: ``namespace:rest``, validated in exactly one place."""

from __future__ import annotations

import re

from .errors import AppError, ErrorCode

MAX_CHANNEL_LENGTH = 200
# namespace: lowercase letters, digits, '_' and '-'; rest: letters, digits and _ - . : @ = +
# (matched with fullmatch: re's '$' also matches before a trailing newline, and
# "chat:x\n" would be a channel of its own that splits log lines)
CHANNEL_PATTERN = r"^([a-z0-9_-]{1,32}):([A-Za-z0-9_.:@=+-]+)$"
_CHANNEL_RE = re.compile(CHANNEL_PATTERN)


def validate_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``AppError(invalid_channel)``."""
    if not isinstance(name, str):
        raise AppError(ErrorCode.INVALID_CHANNEL, "channel must be a string")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise AppError(
            ErrorCode.INVALID_CHANNEL,
            f"channel name is longer than {MAX_CHANNEL_LENGTH} characters",
        )
    if _CHANNEL_RE.fullmatch(name) is None:
        raise AppError(
            ErrorCode.INVALID_CHANNEL,
            "channel must look like 'namespace:name': namespace of [a-z0-9_-] (1-32), "
            "name of [A-Za-z0-9_.:@=+-]",
        )
    return name


def namespace_of(channel: str) -> str:
    """The part of a (valid) channel name before the first ':'."""
    return channel.split(":", 1)[0]


def rest_of(channel: str) -> str:
    """The part of a (valid) channel name after the first ':'."""
    return channel.split(":", 1)[1]
