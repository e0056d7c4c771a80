"""The OpenAPI document: valid, complete, and true of the live server (schemathesis)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from server.app import create_app
from server.config import load_settings
from tests.support.servers import ServerFactory, ServerProcess, make_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("openapi")
    factory = ServerFactory(tmp, {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp / 'sb.db'}",
                                  "SWITCHBOARD_REDIS_URL": "memory://"})
    yield factory.start_sync()
    factory.stop_all()


async def fetch_spec(server: ServerProcess) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/api/v1/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        spec: dict[str, Any] = await r.json()
        return spec


async def test_document_is_valid_openapi_3_1(server: ServerProcess) -> None:
    spec = await fetch_spec(server)
    assert spec["openapi"].startswith("3.1")
    validate(spec)


async def test_every_route_is_described_with_auth_and_problems(server: ServerProcess, tmp_path: Path) -> None:
    spec = await fetch_spec(server)
    app = create_app(load_settings(jwt_secret="x" * 32, database_url=f"sqlite:///{tmp_path / 'a.db'}"))
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and not route.resource.canonical.startswith("/socket.io")
        and route.method != "HEAD"
    }
    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == described
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/v1/") and path != "/api/v1/openapi.json":
                assert op["security"] == [{"bearer": []}], (method, path)
                assert "401" in op["responses"], (method, path)
                problem = op["responses"]["401"]["content"]["application/problem+json"]["schema"]
                assert problem == {"$ref": "#/components/schemas/Problem"}
    body = spec["paths"]["/api/v1/channels/{channel}/events"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PublishBody"}


async def test_positions_answer_and_take_the_epoch(server: ServerProcess) -> None:
    schemas = (await fetch_spec(server))["components"]["schemas"]
    for answer in ("HistoryOut", "SyncChannelOut"):
        assert "epoch" in schemas[answer]["required"], answer
        assert schemas[answer]["properties"]["epoch"]["type"] == "string"
    epochs = schemas["SyncBody"]["properties"]["epochs"]
    assert epochs["type"] == "object" and epochs["additionalProperties"]["maxLength"] == 64
    assert "epochs" not in schemas["SyncBody"].get("required", [])  # older clients send none


def test_schemathesis_finds_no_server_errors_and_no_undocumented_responses(server: ServerProcess) -> None:
    """Generated requests with a valid token: no 5xx, every response matches the document."""
    token = make_token("fuzzer", channels=["*"])
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {token}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance,response_headers_conformance",
         "--max-examples", "25", "--seed", "1", "--no-color", "--workers", "1"],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
