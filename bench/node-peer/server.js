// The Node.js Socket.IO 4 peer: what a user writes from the socket.io and
// @socket.io/redis-adapter docs, speaking Switchboard's wire API so the same
// load tester drives it. No persistence: `seq` is a Redis INCR per channel
// (the honest way to number a channel's events across instances), events are
// broadcast to the channel's room through the Redis adapter.
//
//   PORT=9000 JWT_SECRET=... REDIS_URL=redis://127.0.0.1:6379/0 PREFIX=bench: node server.js
"use strict";

const http = require("http");
const crypto = require("crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const jwt = require("jsonwebtoken");

const port = Number(process.env.PORT || 9000);
const host = process.env.HOST || "127.0.0.1";
const secret = process.env.JWT_SECRET;
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
const prefix = process.env.PREFIX || "nodepeer:";

function fail(ack, code, message) {
  if (typeof ack === "function") ack({ ok: false, error: { code, message } });
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  const cmd = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect(), cmd.connect()]);

  const httpServer = http.createServer((req, res) => {
    res.statusCode = req.url === "/healthz" ? 200 : 404;
    res.end(req.url === "/healthz" ? "ok" : "");
  });
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub, { key: prefix + "socket.io" }) });

  // HS256 verification with the shared secret, like Switchboard.
  io.use((socket, next) => {
    try {
      const claims = jwt.verify(socket.handshake.auth.token, secret, { algorithms: ["HS256"] });
      socket.data.sub = claims.sub;
      next();
    } catch (e) {
      const err = new Error("invalid token");
      err.data = { code: "invalid_token", message: e.message };
      next(err);
    }
  });

  io.on("connection", (socket) => {
    socket.on("subscribe", async (msg, ack) => {
      if (!msg || typeof msg.channel !== "string") return fail(ack, "bad_request", "channel required");
      try {
        await socket.join(msg.channel);
        const head = Number((await cmd.get(prefix + "seq:" + msg.channel)) || 0);
        ack({ ok: true, channel: msg.channel, head });
      } catch (e) {
        fail(ack, "unavailable", e.message);
      }
    });
    socket.on("publish", async (msg, ack) => {
      if (!msg || typeof msg.channel !== "string") return fail(ack, "bad_request", "channel required");
      try {
        const seq = await cmd.incr(prefix + "seq:" + msg.channel);
        const event = { id: crypto.randomUUID(), channel: msg.channel, seq, type: msg.type, data: msg.data,
                        sender: socket.data.sub, client_msg_id: msg.client_msg_id || null, ts: Date.now() };
        io.to(msg.channel).emit("event", event);
        ack({ ok: true, seq, id: event.id, duplicate: false });
      } catch (e) {
        fail(ack, "unavailable", e.message);
      }
    });
  });

  httpServer.listen(port, host, () => console.log(`node peer on http://${host}:${port}`));
  const stop = () => io.close(() => Promise.all([pub.quit(), sub.quit(), cmd.quit()]).finally(() => process.exit(0)));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
