"""Turning results and errors into Socket.IO acks, and validation errors into messages."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from channels.errors import AppError, ErrorCode


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def fail(error: AppError) -> dict[str, Any]:
    return {"ok": False, "error": error.to_dict()}


def bad_request(exc: ValidationError) -> AppError:
    """One readable line per problem: ``field: message``."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return AppError(ErrorCode.BAD_REQUEST, "; ".join(parts))
