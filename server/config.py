"""The one typed settings object, read from the environment once (prefix ``SWITCHBOARD_``)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from channels.limits import Limits

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
PUBLIC_KEY_ALGORITHMS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}


class ConfigError(ValueError):
    """An impossible or unsafe configuration; the message names the setting and the fix."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of a Switchboard instance. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, validation_alias=AliasChoices("SWITCHBOARD_PORT", "PORT"))

    database_url: str = "sqlite:///switchboard.db"
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=10, ge=1)
    redis_url: str = "memory://"
    redis_prefix: str = "switchboard:"

    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = Field(default=5.0, ge=0)
    jwt_require_exp: bool = True
    dev_secret_file: Path = Path(".switchboard-dev-secret")

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    channels_config: Path | None = None
    max_payload_bytes: int = Field(default=65536, gt=0)
    log_level: str = "INFO"

    writer_max_batch: int = Field(default=512, ge=1)
    writer_max_pending: int = Field(default=10_000, ge=1)
    gc_threshold: int = Field(default=50_000, ge=0)
    gap_timeout_ms: int = Field(default=40, ge=1)
    recovery_max_events: int = Field(default=10_000, ge=0)
    history_max_limit: int = Field(default=1000, ge=1)
    history_max_bytes: int = Field(default=512 * 1024, ge=1024)  # of one history page's events
    sync_max_channels: int = Field(default=100, ge=1)
    ping_interval: float = Field(default=25.0, gt=0)
    ping_timeout: float = Field(default=20.0, gt=0)
    shutdown_timeout: float = Field(default=10.0, ge=0)
    drain_batch_size: int = Field(default=500, ge=1)
    drain_batch_interval_ms: int = Field(default=50, ge=0)
    retention_interval_seconds: float = Field(default=60.0, ge=0)
    log_format: Literal["text", "json"] = "text"
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    metrics_enabled: bool = True
    listen_backlog: int = Field(default=1024, ge=1)
    websocket_compression: bool = False

    # -- presence, token lifecycle, limits and backpressure (issue 3) ------------------
    # Rates are per second; a rate or count of 0 turns that limit off. Server tokens
    # are exempt from the rate limits and the per-user connection/subscription limits.
    presence_timeout: float = Field(default=60.0, ge=1)  # a dead instance's members are gone within this
    token_expiry_warning: float = Field(default=60.0, ge=0)  # `expiring` this long before exp
    token_expiry_grace: float = Field(default=5.0, ge=0)  # close this long after exp
    limit_publish_rate: float = Field(default=20.0, ge=0)  # per connection
    limit_publish_burst: int = Field(default=40, ge=1)
    limit_call_rate: float = Field(default=20.0, ge=0)  # other socket calls, per connection
    limit_call_burst: int = Field(default=200, ge=1)
    limit_connect_rate: float = Field(default=20.0, ge=0)  # new connections per client IP
    limit_connect_burst: int = Field(default=100, ge=1)
    limit_connections_per_user: int = Field(default=10, ge=0)  # concurrent, all instances
    limit_subscriptions: int = Field(default=100, ge=0)  # per connection
    limit_rest_rate: float = Field(default=10.0, ge=0)  # REST requests per token
    limit_rest_burst: int = Field(default=30, ge=1)
    trust_forwarded_for: bool = False  # client IP from the last X-Forwarded-For entry
    send_queue_max_messages: int = Field(default=1000, ge=10)  # per socket
    send_queue_max_bytes: int = Field(default=1024 * 1024, ge=4096)  # per socket
    send_queue_close_grace: float = Field(default=10.0, ge=0)  # slow consumer: abort TCP after
    # -- hostile clients (issue 10) ----------------------------------------------------
    max_attachments: int = Field(default=4, ge=0)  # binary attachments per Socket.IO packet; 0: none
    attachment_timeout: float = Field(default=10.0, gt=0)  # for all of a packet's attachments to arrive
    connect_timeout: float = Field(default=10.0, gt=0)  # from an Engine.IO session's open to its `40`
    limit_pending_sessions_per_ip: int = Field(default=1000, ge=0)  # sessions not yet connected, per client IP
    server_batch_max_events: int = Field(default=500, ge=1)  # POST /api/v1/server/publish
    server_batch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    _split_algorithms = field_validator("jwt_algorithms", "cors_origins", mode="before")(_split_csv)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("SWITCHBOARD_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("SWITCHBOARD_DB_POOL_MIN must not exceed SWITCHBOARD_DB_POOL_MAX")
        if self.env == "production" and self.jwt_secret is None and self.jwt_public_key is None:
            raise ValueError(
                "SWITCHBOARD_ENV=production needs SWITCHBOARD_JWT_SECRET (HS256) or "
                "SWITCHBOARD_JWT_PUBLIC_KEY (RS256/ES256); none is set"
            )
        if not self.jwt_algorithms:
            self.jwt_algorithms = ["RS256", "ES256"] if self.jwt_public_key and not self.jwt_secret else ["HS256"]
        self._check_algorithms()
        return self

    def _check_algorithms(self) -> None:
        for alg in self.jwt_algorithms:
            if alg not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS:
                raise ValueError(f"SWITCHBOARD_JWT_ALGORITHMS: '{alg}' is not an allowed algorithm")
        if self.jwt_public_key is None and not set(self.jwt_algorithms) <= HMAC_ALGORITHMS:
            raise ValueError("SWITCHBOARD_JWT_ALGORITHMS names a public-key algorithm but SWITCHBOARD_JWT_PUBLIC_KEY is not set")

    def public_key(self) -> str | None:
        """The PEM text of ``jwt_public_key``, which may be the PEM itself or a file path."""
        value = self.jwt_public_key
        if value is None or "-----BEGIN" in value:
            return value
        return Path(value).read_text(encoding="utf-8")

    def hmac_secret(self) -> str | None:
        """The HS* secret: configured, else (outside production) a generated one kept in ``dev_secret_file``."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if self.jwt_public_key is not None or self.env == "production":
            return None
        return _dev_secret(self.dev_secret_file)

    @property
    def history_page_bytes(self) -> int:
        """A history page's byte budget: ``history_max_bytes``, at most half the send
        bound, since a socket's history reply counts against that bound."""
        return min(self.history_max_bytes, self.send_queue_max_bytes // 2)

    def limits(self) -> Limits:
        """The client-facing limits (channels/limits.py) these settings configure."""
        return Limits(
            publish_rate=self.limit_publish_rate,
            publish_burst=self.limit_publish_burst,
            call_rate=self.limit_call_rate,
            call_burst=self.limit_call_burst,
            connect_rate=self.limit_connect_rate,
            connect_burst=self.limit_connect_burst,
            connections_per_user=self.limit_connections_per_user,
            subscriptions_per_connection=self.limit_subscriptions,
        )

    @property
    def transport_max_message_bytes(self) -> int:
        """Largest Socket.IO message accepted: the payload cap plus room for the envelope."""
        return self.max_payload_bytes + 16 * 1024


def _dev_secret(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret)
    log.warning(
        "SWITCHBOARD_JWT_SECRET is not set: generated a development secret in %s. "
        "Set SWITCHBOARD_JWT_SECRET (and SWITCHBOARD_ENV=production) for real deployments.",
        path,
    )
    return secret


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and explicit overrides); raise ``ConfigError`` with a readable message."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
