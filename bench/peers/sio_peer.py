"""The python-socketio peer: the server a user writes from python-socketio's docs.

``AsyncServer`` on aiohttp with ``AsyncRedisManager`` (every emit goes through
Redis to every instance), speaking Switchboard's wire API so the same load
tester drives it: ``subscribe`` joins the channel's room, ``publish`` numbers
the event with a Redis ``INCR`` per channel (the honest way to number a
channel's events across instances; nothing is persisted) and broadcasts it to
the room. Connections are verified as HS256 JWTs with the shared secret, like
Switchboard. Defaults as in the docs (stdlib ``json``, asyncio's own loop), except a larger
Redis connection pool (see ``build``).

    python -m bench.peers.sio_peer --port 9100 --secret ... --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import jwt
import redis.asyncio as aioredis
import socketio
from aiohttp import web

REDIS_CONNECTIONS = 2000


def build(secret: str, redis_url: str, prefix: str) -> web.Application:
    # redis-py 8's asyncio pool holds 100 connections and raises instead of waiting: with the docs'
    # defaults this server falls over at a few hundred concurrent publishes. Raised, as a user would.
    options = {"max_connections": REDIS_CONNECTIONS}
    manager = socketio.AsyncRedisManager(redis_url, channel=prefix + "socketio", redis_options=options)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    counters = aioredis.Redis.from_url(redis_url, max_connections=REDIS_CONNECTIONS)
    subs: dict[str, str] = {}

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            claims = jwt.decode(token or "", secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                "invalid token", {"code": "invalid_token", "message": str(exc)}) from None
        subs[sid] = claims["sub"]

    async def disconnect(sid: str, *_: Any) -> None:
        subs.pop(sid, None)

    async def subscribe(sid: str, msg: dict[str, Any]) -> dict[str, Any]:
        channel = msg["channel"]
        await sio.enter_room(sid, channel)
        head = int(await counters.get(prefix + "seq:" + channel) or 0)
        return {"ok": True, "channel": channel, "head": head}

    async def publish(sid: str, msg: dict[str, Any]) -> dict[str, Any]:
        channel = msg["channel"]
        seq = int(await counters.incr(prefix + "seq:" + channel))
        event = {"id": str(uuid.uuid4()), "channel": channel, "seq": seq, "type": msg["type"], "data": msg["data"],
                 "sender": subs.get(sid), "client_msg_id": msg.get("client_msg_id"), "ts": int(time.time() * 1000)}
        await sio.emit("event", event, room=channel)
        return {"ok": True, "seq": seq, "id": event["id"], "duplicate": False}

    for handler in (connect, disconnect, subscribe, publish):
        sio.on(handler.__name__, handler)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="siopeer:")
    args = parser.parse_args()
    web.run_app(build(args.secret, args.redis, args.prefix), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
