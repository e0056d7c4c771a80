"""Who may read and publish where. Pure functions of a Principal and a channel."""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import lru_cache

from .errors import AppError, ErrorCode
from .models import Principal
from .names import namespace_of, rest_of
from .namespaces import NamespaceOptions

PERSONAL_NAMESPACE = "user"


def _claim_matches(principal: Principal, channel: str) -> bool:
    return _globs_match(principal.channels, channel)


@lru_cache(maxsize=8192)
def _globs_match(patterns: tuple[str, ...], channel: str) -> bool:
    # asked on every publish; tokens of one app share a handful of claim sets,
    # so (claims, channel) pairs repeat and the cache stays small and hot
    return any(fnmatchcase(channel, pattern) for pattern in patterns)


def _personal_owner(channel: str) -> str | None:
    if namespace_of(channel) == PERSONAL_NAMESPACE:
        return rest_of(channel)
    return None


def can_read(principal: Principal, channel: str) -> bool:
    """Subscribe, history, sync: server tokens everywhere; ``user:<sub>`` only its owner
    (implicitly, no claim needed); any other channel when a ``channels`` glob matches."""
    if principal.is_server:
        return True
    owner = _personal_owner(channel)
    if owner is not None:
        return owner == principal.sub
    return _claim_matches(principal, channel)


def can_publish(principal: Principal, channel: str, options: NamespaceOptions) -> bool:
    """Server tokens anywhere; clients where they may read, a glob matches, and the namespace allows it."""
    if principal.is_server:
        return True
    if not options.publish:
        return False
    return can_read(principal, channel) and _claim_matches(principal, channel)


def require_read(principal: Principal, channel: str) -> None:
    if not can_read(principal, channel):
        raise AppError(ErrorCode.PERMISSION_DENIED, f"not allowed to read {channel}")


def require_publish(principal: Principal, channel: str, options: NamespaceOptions) -> None:
    if not can_publish(principal, channel, options):
        if principal.is_server or options.publish:
            raise AppError(ErrorCode.PERMISSION_DENIED, f"not allowed to publish in {channel}")
        raise AppError(
            ErrorCode.PERMISSION_DENIED,
            f"clients may not publish in namespace '{namespace_of(channel)}'",
        )
