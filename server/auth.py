"""JWT verification, token extraction from a handshake or request, and minting (CLI)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import jwt
import jwt.types

from channels.errors import AppError, ErrorCode
from channels.models import Principal

from .config import HMAC_ALGORITHMS, ConfigError, Settings

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TokenVerifier:
    """Verifies signature, ``exp``, ``nbf`` and (when configured) ``aud``/``iss``.

    Only allow-listed algorithms are accepted, and the key is chosen by the
    algorithm's family, so an RS256 public key can never be used as an HS256
    secret (algorithm confusion) and ``alg: none`` is always refused.
    """

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._secret = settings.hmac_secret()
        self._public_key = settings.public_key()
        if self._secret is None and self._public_key is None:
            raise ConfigError("no JWT key: set SWITCHBOARD_JWT_SECRET or SWITCHBOARD_JWT_PUBLIC_KEY")
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        required = ["sub", "exp"] if settings.jwt_require_exp else ["sub"]
        self._options: jwt.types.Options = {"require": required, "verify_aud": self._audience is not None}

    def verify(self, token: str | None) -> Principal:
        """The principal a token proves, or ``AppError`` with missing_token / invalid_token / token_expired."""
        if not token:
            raise AppError(ErrorCode.MISSING_TOKEN, "a JWT is required")
        unverified = _unverified(token)  # read once, for the key and the date claims' types
        key = self._key_for(unverified["header"])
        _require_numeric_dates(unverified["payload"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AppError(ErrorCode.TOKEN_EXPIRED, "token has expired") from None
        except jwt.PyJWTError as exc:
            raise AppError(ErrorCode.INVALID_TOKEN, f"token rejected: {exc}") from None
        return principal_from_claims(claims)

    def _key_for(self, header: Mapping[str, Any]) -> str:
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise AppError(ErrorCode.INVALID_TOKEN, f"algorithm {alg!r} is not accepted")
        key = self._secret if alg in HMAC_ALGORITHMS else self._public_key
        if key is None:
            raise AppError(ErrorCode.INVALID_TOKEN, f"no key configured for algorithm {alg!r}")
        return key


_NUMERIC_DATES = ("exp", "nbf", "iat")
_MAX_NUMERIC_DATE = 2**53  # seconds; beyond, floats are inexact (and float(10**400) raises)


def _unverified(token: str) -> dict[str, Any]:
    """The token's header and claims as written (``header``, ``payload``), nothing verified."""
    try:
        return jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AppError(ErrorCode.INVALID_TOKEN, f"malformed token: {exc}") from None


def _require_numeric_dates(claims: Mapping[str, Any]) -> None:
    """``exp``, ``nbf`` and ``iat`` must be JSON numbers (RFC 7519 NumericDate). PyJWT
    would take ``"exp": "1700000000"`` (and ``true`` as 1), and fail with an
    ``OverflowError`` on ``Infinity``. Checked on the unverified claims, before the
    signature: ``jwt.decode`` verifies everything else right after."""
    for name in _NUMERIC_DATES:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not abs(value) <= _MAX_NUMERIC_DATE):  # also false for NaN
            raise AppError(ErrorCode.INVALID_TOKEN, f"claim '{name}' must be a number (NumericDate)")


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    sub = claims.get("sub")
    channels = claims.get("channels", [])
    role = claims.get("role")
    info = claims.get("info", {})
    if not isinstance(sub, str) or not sub:
        raise AppError(ErrorCode.INVALID_TOKEN, "claim 'sub' must be a non-empty string")
    if _CONTROL_CHARS.search(sub):  # it names the user in logs and in its 'user:<sub>' channel
        raise AppError(ErrorCode.INVALID_TOKEN, "claim 'sub' must not contain control characters")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise AppError(ErrorCode.INVALID_TOKEN, "claim 'channels' must be a list of strings")
    if role is not None and not isinstance(role, str):
        raise AppError(ErrorCode.INVALID_TOKEN, "claim 'role' must be a string")
    if not isinstance(info, dict):
        raise AppError(ErrorCode.INVALID_TOKEN, "claim 'info' must be an object")
    exp = claims.get("exp")
    return Principal(sub, tuple(channels), role, float(exp) if exp is not None else None, info)


def token_key(token: str) -> str:
    """A key naming one verified token, for per-token limits: a hash of its signed part
    (header and claims). The header's spelling never reaches it, and another valid
    signature of the same claims (ECDSA's ``s`` and ``n - s``) names the same token."""
    signed, _, _ = token.rpartition(".")
    return hashlib.sha256(signed.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def handshake_token(auth: object, environ: Mapping[str, Any]) -> str | None:
    """Token from Socket.IO ``auth: {token}``, else ``Authorization: Bearer``, else ``?token=``."""
    if isinstance(auth, dict):
        token = auth.get("token")
        if isinstance(token, str) and token:
            return token
    header = bearer_token(environ.get("HTTP_AUTHORIZATION"))
    if header:
        return header
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


def mint_token(
    settings: Settings,
    sub: str,
    *,
    ttl: int = 3600,
    channels: Sequence[str] = (),
    role: str | None = None,
    info: Mapping[str, Any] | None = None,
    algorithm: str = "HS256",
) -> str:
    """Sign a token with the configured HMAC secret (development and load testing)."""
    secret = settings.hmac_secret()
    if secret is None:
        raise ConfigError("minting needs SWITCHBOARD_JWT_SECRET (public-key setups mint with their own private key)")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, "channels": list(channels)}
    if role:
        claims["role"] = role
    if info:
        claims["info"] = dict(info)
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, secret, algorithm=algorithm)
