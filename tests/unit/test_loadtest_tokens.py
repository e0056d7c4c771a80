"""Token minting and token files for the simulated clients."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from loadtest.tokens import FileTokens, MintedTokens, TokenSpec

SECRET = "loadtest-unit-secret-0123456789abcdef"


def test_minted_tokens_are_hs256_with_one_sub_per_client() -> None:
    tokens = MintedTokens(SECRET, channels=("bench:*",), ttl=600)
    claims = jwt.decode(tokens.token(7), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "loadtest-7"
    assert claims["channels"] == ["bench:*"]
    assert 590 <= claims["exp"] - time.time() <= 600
    assert jwt.decode(tokens.token(8), SECRET, algorithms=["HS256"])["sub"] == "loadtest-8"


def test_a_reconnecting_client_presents_the_same_token() -> None:
    tokens = MintedTokens(SECRET)
    assert tokens.token(3) == tokens.token(3)


def test_audience_and_issuer_when_the_server_checks_them() -> None:
    token = MintedTokens(SECRET, audience="sb", issuer="auth").token(0)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="sb", issuer="auth")
    assert claims["aud"] == "sb" and claims["iss"] == "auth"


def test_a_wrong_secret_does_not_verify() -> None:
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(MintedTokens("other-secret-0123456789abcdef0123").token(0), SECRET, algorithms=["HS256"])


def test_token_file_round_robin_skips_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# made by the auth service\na.b.c\n\n  d.e.f  \n")
    tokens = FileTokens.load(path)
    assert [tokens.token(i) for i in range(4)] == ["a.b.c", "d.e.f", "a.b.c", "d.e.f"]


def test_an_empty_token_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"empty\.txt"):
        FileTokens.load(path)


def test_spec_builds_the_source_and_needs_one() -> None:
    assert isinstance(TokenSpec(secret=SECRET).build(), MintedTokens)
    with pytest.raises(ValueError, match="--secret"):
        TokenSpec().build()
