// One socket.io-client socket that opts in to connection state recovery and reconnects
// quickly; reports one JSON line per connection, drop and event (logs too), on stdout.
// Each event line carries the offset the server appended as the last argument.
// Usage: node recovering-client.js <token> <url> [topic...]   Exits when stdin closes.
"use strict";
const { io } = require("socket.io-client");

const [token, url, ...topics] = process.argv.slice(2);
const report = (line) => process.stdout.write(JSON.stringify({ url, ...line }) + "\n");

const socket = io(url, {
  auth: { token, recovery: true },
  transports: ["websocket"],
  reconnectionDelay: 100,
  reconnectionDelayMax: 200,
});
socket.on("connect", async () => {
  report({ type: "connected", recovered: socket.recovered });
  if (topics.length && !socket.recovered) {
    report({ type: "subscribed", reply: await socket.emitWithAck("subscribe", topics) });
  }
});
socket.on("connect_error", (err) => report({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => report({ type: "disconnected", reason }));
socket.onAny((name, payload, ...rest) => {
  report({ type: name === "log" ? "log" : "event", name, payload, rest });
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
