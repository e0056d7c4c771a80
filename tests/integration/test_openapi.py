"""The OpenAPI document: valid, complete, and as strict as the server (hole 12).

Generated requests against it are test_schemathesis.py; here each rule the server
checks is asserted twice: the document states it, and the server applies it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
from openapi_spec_validator import validate

from server.app import create_app
from server.config import load_settings
from tests.support.servers import ServerFactory, ServerProcess, make_token

CLIENT = make_token("alice", channels=["*"], ttl=3600)
SERVER = make_token("backend", role="server", ttl=3600)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("openapi")
    (tmp / "channels.toml").write_text("[namespaces.room]\npresence = true\n")
    factory = ServerFactory(tmp, {"SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp / 'sb.db'}",
                                  "SWITCHBOARD_REDIS_URL": "memory://",
                                  "SWITCHBOARD_CHANNELS_CONFIG": str(tmp / "channels.toml"),
                                  "SWITCHBOARD_SYNC_MAX_CHANNELS": "5",
                                  "SWITCHBOARD_SERVER_BATCH_MAX_EVENTS": "3"})
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


def body_schema_says_valid(spec: dict[str, Any], model: str, body: Any) -> bool:
    """Whether ``body`` is valid against ``#/components/schemas/<model>`` of the document:
    JSON Schema 2020-12 with ECMA-262 patterns, as OpenAPI 3.1 says (Python's ``re``
    would let ``$`` match before a final newline)."""
    registry = jsonschema_rs.Registry([("urn:spec", spec)])
    schema = {"$ref": f"urn:spec#/components/schemas/{model}"}
    return bool(jsonschema_rs.Draft202012Validator(schema, registry=registry).is_valid(body))


async def post(server: ServerProcess, path: str, body: Any, token: str = CLIENT,
               **headers: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(
            server.url + path, json=body, headers={"Authorization": f"Bearer {token}", **headers}) as r:
        return r.status, await r.json(content_type=None)


async def get(server: ServerProcess, path: str, token: str = CLIENT) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            server.url + path, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


async def test_the_rule_between_idempotency_key_and_client_msg_id_is_stated_and_applied(server: ServerProcess) -> None:
    spec = await fetch_spec(server)
    op = spec["paths"]["/api/v1/channels/{channel}/events"]["post"]
    (header,) = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
    assert "client_msg_id" in header["description"] and "must be equal" in header["description"]
    path = "/api/v1/channels/chat:idem/events"
    status, body = await post(server, path, {"type": "t", "data": {}, "client_msg_id": "a"}, **{"Idempotency-Key": "b"})
    assert (status, body["code"]) == (400, "bad_request")
    status, body = await post(server, path, {"type": "t", "data": {}, "client_msg_id": "a"}, **{"Idempotency-Key": "a"})
    assert status == 201


@pytest.mark.parametrize(("body", "valid"), [
    ({"channels": {"chat:1": 0}}, True),
    ({"channels": {"chat:1": 3.0}}, True),  # JSON Schema's integer: no fraction
    ({"channels": {}}, True),
    ({"channels": {"nocolon": 0}}, False),
    ({"channels": {"Chat:1": 0}}, False),
    ({"channels": {"chat:" + "x" * 200: 0}}, False),
    ({"channels": {f"chat:{i}": 0 for i in range(6)}}, False),  # SWITCHBOARD_SYNC_MAX_CHANNELS=5
    ({"channels": {"chat:1": False}}, False),
    ({"channels": {"chat:1": "3"}}, False),
    ({"channels": {"chat:1": -1}}, False),
])
async def test_sync_bodies_the_document_calls_valid_are_the_ones_the_server_accepts(
        server: ServerProcess, body: dict[str, Any], valid: bool) -> None:
    spec = await fetch_spec(server)
    assert body_schema_says_valid(spec, "SyncBody", body) is valid
    status, answer = await post(server, "/api/v1/sync", body)
    assert (status == 200) is valid, (status, answer)
    if not valid:
        assert status == 400 and answer["code"] in {"bad_request", "invalid_channel"}


def batch(*channels: str, **last: Any) -> dict[str, Any]:
    """Events to ``channels``; ``last`` sets fields of the last one."""
    events: list[dict[str, Any]] = [{"channel": c, "type": "t", "data": {}} for c in channels]
    if events:
        events[-1].update(last)
    return {"events": events}


@pytest.mark.parametrize(("body", "valid"), [
    (batch("chat:b1"), True),
    (batch("chat:b2", "user:bob", "room:b"), True),
    (batch(), False),  # at least one event
    (batch("chat:1", "chat:2", "chat:3", "chat:4"), False),  # SWITCHBOARD_SERVER_BATCH_MAX_EVENTS=3
    (batch("chat:ok", ""), False),
    (batch("chat:ok", "chat:bad\n"), False),
    (batch("chat:ok", "no-colon"), False),
    # a NUL no store keeps, after a good event: the whole batch is refused, not half stored
    (batch("chat:ok", "chat:nul", client_msg_id="a\u0000b"), False),
    (batch("chat:ok", "chat:nul", data={"k": "a\u0000"}), False),
    (batch("chat:ok", "chat:nul", data={"a\u0000": 1}), False),
])
async def test_batch_bodies_the_document_calls_valid_are_the_ones_the_server_accepts(
        server: ServerProcess, body: dict[str, Any], valid: bool) -> None:
    spec = await fetch_spec(server)
    assert body_schema_says_valid(spec, "BatchPublishBody", body) is valid
    heads = "/api/v1/server/channels/chat:ok/stats"
    before = (await get(server, heads, token=SERVER))[1]["head"]
    status, answer = await post(server, "/api/v1/server/publish", body, token=SERVER)
    if valid:
        assert status == 200 and all(r["ok"] for r in answer["results"]), answer
    else:  # refused whole: nothing of it was stored
        assert status == 400 and answer["code"] in {"bad_request", "invalid_channel"}, (status, answer)
        assert (await get(server, heads, token=SERVER))[1]["head"] == before


async def test_a_nul_in_published_data_is_invalid_in_the_document_and_refused(server: ServerProcess) -> None:
    spec = await fetch_spec(server)
    for body in ({"type": "t", "data": {"k": ["a\u0000"]}}, {"type": "t", "data": {}, "client_msg_id": "\u0000"}):
        assert not body_schema_says_valid(spec, "PublishBody", body)
        status, answer = await post(server, "/api/v1/channels/chat:nul/events", body)
        assert (status, answer["code"]) == (400, "bad_request")
    assert body_schema_says_valid(spec, "PublishBody", {"type": "t", "data": {"k": ["a", {"b": None, "c": 1.5}]}})


@pytest.mark.parametrize("path", ["/api/v1/channels/{}/presence", "/api/v1/server/channels/{}/presence"])
async def test_presence_where_it_is_off_is_a_documented_404_not_a_400(server: ServerProcess, path: str) -> None:
    spec = await fetch_spec(server)
    responses = spec["paths"][path.format("{channel}")]["get"]["responses"]
    assert "presence is off" in responses["404"]["description"]
    token = SERVER if "/server/" in path else CLIENT
    status, answer = await get(server, path.format("chat:1"), token=token)
    assert (status, answer["code"]) == (404, "not_found")
    assert "presence is off in namespace 'chat'" in answer["detail"]
    status, answer = await get(server, path.format("room:1"), token=token)
    assert (status, answer) == (200, {"channel": "room:1", "members": []})
    # the name and the access are checked first
    assert (await get(server, path.format("nocolon"), token=token))[0] == 400
    assert (await get(server, path.format("user:bob"), token=make_token("carol")))[0] == 403


async def test_the_user_of_the_disconnect_route_is_any_sub_a_token_can_carry(server: ServerProcess) -> None:
    spec = await fetch_spec(server)
    (user,) = spec["paths"]["/api/v1/server/users/{user}/disconnect"]["post"]["parameters"]
    assert user["schema"] == {"type": "string", "minLength": 1}  # no maxLength the server would not apply
    long_sub = "u" * 1000
    status, answer = await post(server, f"/api/v1/server/users/{long_sub}/disconnect", None, token=SERVER)
    assert (status, answer) == (202, {"user": long_sub, "sent": True})
