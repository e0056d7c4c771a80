from __future__ import annotations

import pytest

from channels.authz import can_publish, can_read, require_publish
from channels.errors import AppError, ErrorCode
from channels.models import Principal
from channels.namespaces import NamespaceOptions

OPEN = NamespaceOptions()
CLOSED = NamespaceOptions(publish=False)


def alice(*channels: str) -> Principal:
    return Principal("alice", tuple(channels))


def test_glob_in_channels_claim_grants_read_and_publish() -> None:
    p = alice("chat:*")
    assert can_read(p, "chat:42")
    assert can_publish(p, "chat:42", OPEN)
    assert not can_read(p, "news:1")
    assert not can_publish(p, "news:1", OPEN)


def test_exact_claim_does_not_match_siblings() -> None:
    p = alice("chat:42")
    assert can_read(p, "chat:42")
    assert not can_read(p, "chat:420")


def test_personal_channel_readable_only_by_owner_even_with_wildcard_claim() -> None:
    assert can_read(alice(), "user:alice")
    assert not can_read(alice("user:*", "*"), "user:bob")


def test_namespace_without_client_publish_refuses_clients_but_not_servers() -> None:
    assert not can_publish(alice("feed:*"), "feed:1", CLOSED)
    assert can_publish(Principal("backend", (), "server"), "feed:1", CLOSED)
    with pytest.raises(AppError) as err:
        require_publish(alice("feed:*"), "feed:1", CLOSED)
    assert err.value.code is ErrorCode.PERMISSION_DENIED


def test_server_role_reads_and_publishes_anywhere() -> None:
    server = Principal("backend", (), "server")
    assert can_read(server, "user:bob")
    assert can_publish(server, "user:bob", CLOSED)
