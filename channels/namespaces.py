"""Per-namespace options, read from a TOML file, with documented defaults.

```toml
[defaults]                 # applies to every namespace not listed below
publish = true             # may clients (non-server tokens) publish?
max_payload_bytes = 65536  # size of `data` as JSON; capped by SWITCHBOARD_MAX_PAYLOAD_BYTES
history_max_age_seconds = 604800   # retention by age (omit for no limit)
history_max_events = 10000         # retention by count per channel (omit for no limit)
presence = false           # track members, answer `presence`, send join/leave events

[namespaces.chat]
history_max_events = 1000

[namespaces.user]
publish = false            # built-in default for `user:` channels
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .names import namespace_of


class NamespaceOptions(BaseModel):
    """What a namespace allows. Unknown keys are an error, so typos fail at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publish: bool = True
    max_payload_bytes: int = Field(default=65536, gt=0)
    history_max_age_seconds: float | None = Field(default=7 * 24 * 3600, gt=0)
    history_max_events: int | None = Field(default=10_000, gt=0)
    presence: bool = False


BUILTIN_OVERRIDES: dict[str, dict[str, Any]] = {
    # personal channels carry server-to-user messages; users read, the app's backend writes
    "user": {"publish": False},
}


class NamespaceRules:
    """Resolves the options of any channel: its namespace's entry, else the defaults."""

    def __init__(
        self,
        defaults: NamespaceOptions | None = None,
        namespaces: dict[str, NamespaceOptions] | None = None,
        *,
        payload_cap: int | None = None,
    ) -> None:
        base = defaults or NamespaceOptions()
        self._defaults = _capped(base, payload_cap)
        self._namespaces = {
            name: _capped(opts, payload_cap) for name, opts in (namespaces or {}).items()
        }

    def for_channel(self, channel: str) -> NamespaceOptions:
        return self.for_namespace(namespace_of(channel))

    def for_namespace(self, namespace: str) -> NamespaceOptions:
        return self._namespaces.get(namespace, self._defaults)

    @property
    def defaults(self) -> NamespaceOptions:
        return self._defaults

    @classmethod
    def load(cls, path: Path | None, *, payload_cap: int | None = None) -> NamespaceRules:
        """Read ``path`` (TOML); ``None`` means built-in defaults. Raises ``ValueError`` with the file and the problem."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ValueError(f"cannot read channels config {path}: {exc}") from exc
        try:
            return cls._from_dict(raw, payload_cap)
        except (ValidationError, TypeError) as exc:
            raise ValueError(f"invalid channels config {path}: {exc}") from exc

    @classmethod
    def _from_dict(cls, raw: dict[str, Any], payload_cap: int | None) -> NamespaceRules:
        unknown = set(raw) - {"defaults", "namespaces"}
        if unknown:
            raise TypeError(f"unknown top-level tables {sorted(unknown)}")
        default_raw = raw.get("defaults", {})
        defaults = NamespaceOptions(**default_raw)
        listed = raw.get("namespaces", {})
        merged: dict[str, NamespaceOptions] = {}
        for name in set(BUILTIN_OVERRIDES) | set(listed):
            fields = {**default_raw, **BUILTIN_OVERRIDES.get(name, {}), **listed.get(name, {})}
            merged[name] = NamespaceOptions(**fields)
        return cls(defaults, merged, payload_cap=payload_cap)


def _capped(options: NamespaceOptions, cap: int | None) -> NamespaceOptions:
    if cap is None or options.max_payload_bytes <= cap:
        return options
    return options.model_copy(update={"max_payload_bytes": cap})
