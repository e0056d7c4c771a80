from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.errors import AppError, ErrorCode
from server.auth import TokenVerifier, handshake_token, mint_token
from server.config import ConfigError, load_settings

SECRET = "unit-test-secret-unit-test-secret-42"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ["SWITCHBOARD_ENV", "SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_JWT_PUBLIC_KEY", "PORT",
                 "SWITCHBOARD_PORT", "SWITCHBOARD_JWT_ALGORITHMS"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def verifier(**overrides: object) -> TokenVerifier:
    return TokenVerifier(load_settings(jwt_secret=SECRET, **overrides))


def token(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    base: dict[str, object] = {"sub": "alice", "exp": int(time.time()) + 60}
    return jwt.encode({**base, **claims}, key, algorithm=alg)


def code_of(v: TokenVerifier, tok: str | None) -> ErrorCode:
    with pytest.raises(AppError) as err:
        v.verify(tok)
    return err.value.code


def test_production_without_secret_refuses_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "production")
    with pytest.raises(ConfigError, match="SWITCHBOARD_JWT_SECRET"):
        load_settings()


def test_development_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    first = load_settings().hmac_secret()
    assert first and len(first) >= 32
    assert load_settings().hmac_secret() == first  # same file: the CLI's tokens match the server
    assert (tmp_path / ".switchboard-dev-secret").stat().st_mode & 0o077 == 0


def test_port_env_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    assert load_settings().port == 9123


def test_csv_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_JWT_ALGORITHMS", "HS256, HS512")
    assert load_settings(jwt_secret=SECRET).jwt_algorithms == ["HS256", "HS512"]


def test_none_algorithm_cannot_be_configured() -> None:
    with pytest.raises(ConfigError, match="none"):
        load_settings(jwt_secret=SECRET, jwt_algorithms=["none"])


def test_valid_token_gives_principal() -> None:
    p = verifier().verify(token({"channels": ["chat:*"], "role": "server", "info": {"name": "A"}}))
    assert (p.sub, p.channels, p.role, p.info) == ("alice", ("chat:*",), "server", {"name": "A"})


def test_refusals_have_codes() -> None:
    v = verifier()
    assert code_of(v, None) is ErrorCode.MISSING_TOKEN
    assert code_of(v, "not-a-jwt") is ErrorCode.INVALID_TOKEN
    assert code_of(v, token({"exp": int(time.time()) - 60})) is ErrorCode.TOKEN_EXPIRED
    assert code_of(v, token({}, key="another-secret-another-secret-123")) is ErrorCode.INVALID_TOKEN
    assert code_of(v, token({"nbf": int(time.time()) + 600})) is ErrorCode.INVALID_TOKEN
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert code_of(v, unsigned) is ErrorCode.INVALID_TOKEN
    assert code_of(v, token({"channels": "chat:*"})) is ErrorCode.INVALID_TOKEN
    assert code_of(v, jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")) is ErrorCode.INVALID_TOKEN  # no exp


def test_audience_and_issuer_checked_when_configured() -> None:
    v = verifier(jwt_audience="app", jwt_issuer="https://auth")
    assert v.verify(token({"aud": "app", "iss": "https://auth"})).sub == "alice"
    assert code_of(v, token({"aud": "other", "iss": "https://auth"})) is ErrorCode.INVALID_TOKEN
    assert code_of(v, token({"aud": "app"})) is ErrorCode.INVALID_TOKEN


def test_rs256_with_public_key_and_no_algorithm_confusion(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    key_file = tmp_path / "pub.pem"
    key_file.write_text(pem)
    v = TokenVerifier(load_settings(jwt_public_key=str(key_file)))
    assert v.verify(token({}, key=private, alg="RS256")).sub == "alice"  # type: ignore[arg-type]
    # HS256 "signed" with the public key text must not pass (classic algorithm confusion)
    assert code_of(v, _hs256_with_raw_key({"sub": "mallory", "exp": 9999999999}, pem.encode())) is ErrorCode.INVALID_TOKEN
    assert code_of(v, token({}, key=SECRET)) is ErrorCode.INVALID_TOKEN


def _hs256_with_raw_key(claims: dict[str, object], key: bytes) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def test_handshake_token_sources() -> None:
    assert handshake_token({"token": "a"}, {"HTTP_AUTHORIZATION": "Bearer b", "QUERY_STRING": "token=c"}) == "a"
    assert handshake_token(None, {"HTTP_AUTHORIZATION": "Bearer b", "QUERY_STRING": "token=c"}) == "b"
    assert handshake_token({}, {"QUERY_STRING": "EIO=4&token=c"}) == "c"
    assert handshake_token("junk", {}) is None


def test_cli_minted_token_verifies() -> None:
    settings = load_settings(jwt_secret=SECRET)
    p = TokenVerifier(settings).verify(mint_token(settings, "bob", channels=["chat:*"], role="server"))
    assert (p.sub, p.channels, p.is_server) == ("bob", ("chat:*",), True)


def test_limit_settings_default_to_the_documented_limits() -> None:
    from channels.limits import Limits

    settings = load_settings(jwt_secret=SECRET)
    assert settings.limits() == Limits()
    assert (settings.send_queue_max_messages, settings.send_queue_max_bytes) == (1000, 1024 * 1024)
    assert (settings.presence_timeout, settings.token_expiry_warning, settings.token_expiry_grace) == (60, 60, 5)


def test_limit_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_LIMIT_PUBLISH_RATE", "0")
    monkeypatch.setenv("SWITCHBOARD_LIMIT_SUBSCRIPTIONS", "7")
    limits = load_settings(jwt_secret=SECRET).limits()
    assert limits.publish_bucket() is None and limits.subscriptions_per_connection == 7
    monkeypatch.setenv("SWITCHBOARD_PRESENCE_TIMEOUT", "0.1")
    with pytest.raises(ConfigError, match="presence_timeout"):
        load_settings(jwt_secret=SECRET)
