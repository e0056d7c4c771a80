"""Issue 10 (hostile clients): names, ids and token claims that only a hostile client sends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from channels.errors import AppError, ErrorCode
from channels.names import validate_channel
from handlers.rest import _valid_id
from handlers.schemas import BatchEventIn, PublishBody, PublishIn
from server.auth import TokenVerifier, token_key
from server.config import load_settings

SECRET = "unit-test-secret-unit-test-secret-42"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ["SWITCHBOARD_ENV", "SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_JWT_PUBLIC_KEY", "SWITCHBOARD_JWT_ALGORITHMS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


# -- 8. a trailing newline is not part of a valid name or id ------------------------------


@pytest.mark.parametrize("name", ["chat:x\n", "chat:x\r\n", "chat\n:x", "chat:\n", "chat:x\x00", "chat:x "])
def test_channel_names_with_a_trailing_or_inner_newline_are_refused(name: str) -> None:
    with pytest.raises(AppError) as err:
        validate_channel(name)
    assert err.value.code is ErrorCode.INVALID_CHANNEL


def test_event_types_and_client_msg_ids_with_control_characters_are_refused() -> None:
    good: dict[str, Any] = {"channel": "chat:x", "type": "t", "data": {}, "client_msg_id": "m-1 é"}
    PublishIn.model_validate(good)
    for field, value in [("type", "t\n"), ("client_msg_id", "m-1\n"), ("client_msg_id", "m\x00"),
                         ("client_msg_id", "m\x85")]:
        for model, body in [(PublishIn, good), (PublishBody, {k: v for k, v in good.items() if k != "channel"}),
                            (BatchEventIn, good)]:
            with pytest.raises(ValidationError):
                model.model_validate({**body, field: value})
    assert _valid_id("m-1") and _valid_id("x" * 128)
    assert not _valid_id("m-1\n") and not _valid_id("") and not _valid_id("x" * 129) and not _valid_id("a\tb")


# -- 11. NumericDate claims are numbers -------------------------------------------------


def verifier() -> TokenVerifier:
    return TokenVerifier(load_settings(jwt_secret=SECRET))


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, **claims}, SECRET, algorithm="HS256")


def code_of(tok: str) -> ErrorCode:
    with pytest.raises(AppError) as err:
        verifier().verify(tok)
    return err.value.code


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["now", True, float("inf"), float("nan"), 10**400, [1], {"t": 1}])
def test_date_claims_that_are_not_json_numbers_are_invalid_tokens(claim: str, value: Any) -> None:
    now = int(time.time())
    if value == "now":
        value = str(now + 60 if claim == "exp" else now - 10)  # a numeric string PyJWT would convert
    assert code_of(signed({claim: value})) is ErrorCode.INVALID_TOKEN


def test_date_claims_as_numbers_still_work() -> None:
    now = time.time()
    principal = verifier().verify(signed({"exp": now + 60.5, "nbf": now - 1, "iat": int(now)}))
    assert principal.sub == "alice" and principal.expires_at == pytest.approx(now + 60.5)
    assert code_of(signed({"exp": int(now) - 60})) is ErrorCode.TOKEN_EXPIRED


def test_a_sub_with_control_characters_is_an_invalid_token() -> None:
    assert code_of(signed({"sub": "alice\n"})) is ErrorCode.INVALID_TOKEN
    assert verifier().verify(signed({"sub": "Zoë ☃"})).sub == "Zoë ☃"


# -- 5. one key per token, whatever its spelling --------------------------------------------


def test_token_key_names_the_signed_part() -> None:
    tok = signed({})
    header, payload, signature = tok.split(".")
    assert token_key(tok) == token_key(f"{header}.{payload}.{signature[::-1]}")  # another signature
    assert token_key(tok) != token_key(signed({"jti": "2"}))


# -- 7b. nesting depth ---------------------------------------------------------------------


def nested(depth: int, kind: str = "object") -> Any:
    data: Any = {"leaf": True} if kind == "object" else [1]
    for _ in range(depth - 1):
        data = {"a": data} if kind == "object" else [data]
    return data


@pytest.mark.parametrize("kind", ["object", "array"])
def test_data_deeper_than_the_limit_is_a_bad_request_at_any_depth_orjson_would_fail_on_or_not(kind: str) -> None:
    from channels.codec import MAX_DATA_DEPTH, encode_data, encode_event
    from channels.models import Event

    deepest = {"d": nested(MAX_DATA_DEPTH - 1, kind)}
    encode_data(deepest)
    encode_event(Event("id", "chat:x", 1, "t", deepest, "alice", 0))  # wrapped in the event: still encodes
    for depth in (MAX_DATA_DEPTH + 1, 254, 255, 900):
        with pytest.raises(AppError) as err:
            encode_data({"d": nested(depth - 1, kind)})
        assert err.value.code is ErrorCode.BAD_REQUEST and "deeper than" in err.value.message
    with pytest.raises(AppError) as err:
        encode_data({"big": 2**70})
    assert err.value.code is ErrorCode.BAD_REQUEST
    assert encode_data({"brackets": "[[[[{{{{" * 50}) == b'{"brackets":"' + b"[[[[{{{{" * 50 + b'"}'
