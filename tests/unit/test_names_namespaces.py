from __future__ import annotations

from pathlib import Path

import pytest

from channels.errors import AppError, ErrorCode
from channels.names import MAX_CHANNEL_LENGTH, namespace_of, validate_channel
from channels.namespaces import NamespaceRules


@pytest.mark.parametrize("name", ["chat:42", "user:alice", "a:b", "room-1:x.y_z:w@host=+"])
def test_valid_names(name: str) -> None:
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "chat", ":x", "chat:", "Chat:1", "chat:a b", "chat:é", "chat:*", 42, None, "x:" + "a" * MAX_CHANNEL_LENGTH],
)
def test_invalid_names(name: object) -> None:
    with pytest.raises(AppError) as err:
        validate_channel(name)
    assert err.value.code is ErrorCode.INVALID_CHANNEL


def test_namespace_is_text_before_first_colon() -> None:
    assert namespace_of("chat:room:1") == "chat"


def test_defaults_without_file() -> None:
    rules = NamespaceRules.load(None)
    assert rules.for_channel("chat:1").publish
    assert not rules.for_channel("user:bob").publish  # built-in: only servers publish to users


def test_toml_overrides_and_payload_cap(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text(
        "[defaults]\nmax_payload_bytes = 1000\n"
        "[namespaces.chat]\nhistory_max_events = 5\n"
        "[namespaces.feed]\npublish = false\nmax_payload_bytes = 999999\n"
    )
    rules = NamespaceRules.load(path, payload_cap=4096)
    assert rules.for_channel("chat:1").history_max_events == 5
    assert rules.for_channel("chat:1").max_payload_bytes == 1000  # inherits [defaults]
    assert rules.for_channel("other:1").max_payload_bytes == 1000
    assert not rules.for_channel("feed:1").publish
    assert rules.for_channel("feed:1").max_payload_bytes == 4096  # capped by the global limit


def test_unknown_option_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text("[namespaces.chat]\npublsh = false\n")
    with pytest.raises(ValueError, match="publsh"):
        NamespaceRules.load(path)
