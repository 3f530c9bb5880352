// Drives the sidecar with the real socket.io-client, as NestMTX's users do.
// Usage: node client.js '<json: {url, token, placement, scenario, newToken?}>'
// Prints one JSON object per line: what the client observed, in order.
"use strict";

const { io } = require("socket.io-client");

const options = JSON.parse(process.argv[2]);
const say = (record) => process.stdout.write(JSON.stringify(record) + "\n");
const deadline = setTimeout(() => {
  say({ timeout: true });
  process.exit(1);
}, 15000);

function tokenOptions(token, placement) {
  switch (placement) {
    case "auth":
      return { auth: { token } };
    case "header":
      return { extraHeaders: { Authorization: `Bearer ${token}` } };
    case "query":
      return { query: { token } };
    case "all": // the seed's example sets all three
      return {
        auth: { token },
        extraHeaders: { Authorization: `Bearer ${token}` },
        query: { token },
      };
    case "none":
      return {};
    default:
      throw new Error(`unknown placement ${placement}`);
  }
}

// One request, answered both on the `<requestId>` event and on the ack callback.
function request(socket, body) {
  return new Promise((resolve) => {
    let event, ack;
    const done = () => event !== undefined && ack !== undefined && resolve({ event, ack });
    socket.once(body.requestId, (reply) => { event = reply; done(); });
    socket.emit("request", body, (reply) => { ack = reply; done(); });
  });
}

function finish(socket, code = 0) {
  socket.disconnect();
  clearTimeout(deadline);
  process.exit(code);
}

const socket = io(options.url, {
  reconnection: false,
  ...tokenOptions(options.token, options.placement),
});

socket.on("connect_error", (err) => {
  say({ connect_error: err.message });
  finish(socket);
});

if (options.scenario === "list") {
  socket.once("connect", async () => {
    say({ connected: true, transport: socket.io.engine.transport.name });
    say(await request(socket, { command: "list", module: "users", requestId: "js-list" }));
    finish(socket);
  });
} else if (options.scenario === "reconnect") {
  // Log out over Socket.IO (the server drops this socket), then the seed's
  // "Reconnecting with a New Token" example, verbatim.
  socket.once("connect", async () => {
    say({ connected: true });
    say(await request(socket, {
      command: "delete", module: "auth", entity: "current", requestId: "js-logout",
    }));
  });
  socket.once("disconnect", (reason) => {
    say({ disconnected: reason });
    socket.disconnect();

    socket.io.opts.auth.token = options.newToken;
    socket.io.opts.extraHeaders.Authorization = `Bearer ${options.newToken}`;
    socket.io.opts.query.token = options.newToken;

    socket.connect();
    socket.once("connect", async () => {
      say({ reconnected: true });
      say(await request(socket, { command: "list", module: "version", requestId: "js-v" }));
      finish(socket);
    });
  });
} else if (options.scenario === "refused") {
  socket.once("connect", () => {
    say({ connected: true });
    finish(socket, 1);
  });
} else {
  throw new Error(`unknown scenario ${options.scenario}`);
}
