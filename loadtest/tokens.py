"""Where the simulated clients' JWTs come from: minted with the shared secret, or a file.

A real app's auth service signs tokens with the secret it shares with
Switchboard; the load tester does the same (``--secret``), giving every
simulated user its own ``sub`` and the channel globs the scenario needs. A
deployment whose key the tester must not hold hands it a file of ready tokens
(``--tokens``), one per line, used round-robin.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt


class TokenSource(Protocol):
    """Gives the token for simulated client number ``index`` (0-based, global across workers)."""

    def token(self, index: int) -> str: ...


@dataclass
class MintedTokens(TokenSource):
    """HS256 tokens signed with ``secret``: ``sub`` is ``{sub_prefix}{index}``.

    ``channels`` are the globs put in the ``channels`` claim; ``audience`` and
    ``issuer`` are added when the server checks them. Tokens are cached per
    index so a reconnecting client presents the same identity (re-minted when
    less than a tenth of ``ttl`` is left).
    """

    secret: str
    channels: Sequence[str] = ("*",)
    ttl: int = 3600
    sub_prefix: str = "loadtest-"
    audience: str | None = None
    issuer: str | None = None
    algorithm: str = "HS256"
    _cache: dict[int, tuple[float, str]] = field(default_factory=dict, repr=False)

    def token(self, index: int) -> str:
        now = time.time()
        cached = self._cache.get(index)
        if cached is not None and cached[0] - now > self.ttl / 10:
            return cached[1]
        claims: dict[str, Any] = {
            "sub": f"{self.sub_prefix}{index}",
            "iat": int(now),
            "exp": int(now) + self.ttl,
            "channels": list(self.channels),
        }
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        with warnings.catch_warnings():
            # a short secret is the deployment's choice; the server, not the tester, should warn
            warnings.simplefilter("ignore")
            minted = jwt.encode(claims, self.secret, algorithm=self.algorithm)
        self._cache[index] = (now + self.ttl, minted)
        return minted


@dataclass(frozen=True)
class FileTokens(TokenSource):
    """Tokens read from a file, one per line (blank lines and ``#`` comments skipped), used round-robin."""

    tokens: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> FileTokens:
        """Read ``path``; ``ValueError`` naming the file when it holds no token."""
        lines = path.read_text(encoding="utf-8").splitlines()
        tokens = tuple(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#"))
        if not tokens:
            raise ValueError(f"{path}: no tokens in the file")
        return cls(tokens)

    def token(self, index: int) -> str:
        return self.tokens[index % len(self.tokens)]


@dataclass(frozen=True)
class TokenSpec:
    """The serializable description workers build their ``TokenSource`` from."""

    secret: str | None = None
    path: str | None = None
    channels: tuple[str, ...] = ("*",)
    ttl: int = 3600
    audience: str | None = None
    issuer: str | None = None

    def build(self) -> TokenSource:
        if self.path is not None:
            return FileTokens.load(Path(self.path))
        if self.secret is None:
            raise ValueError("no token source: give --secret (mint HS256 tokens) or --tokens FILE")
        return MintedTokens(self.secret, self.channels, self.ttl, audience=self.audience, issuer=self.issuer)
