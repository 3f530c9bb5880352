// Connects one socket.io-client per URL and reports, one JSON line per occurrence on stdout,
// each connection and every event it receives (logs excepted).
// Usage: node events-client.js <token> <url>...   Exits when stdin closes.
"use strict";
const { io } = require("socket.io-client");

const [token, ...urls] = process.argv.slice(2);
const report = (line) => process.stdout.write(JSON.stringify(line) + "\n");

for (const url of urls) {
  const socket = io(url, { auth: { token }, transports: ["websocket"], reconnection: false });
  socket.on("connect", () => report({ type: "connected", url }));
  socket.on("connect_error", (err) => report({ type: "connect_error", url, message: err.message }));
  socket.on("disconnect", (reason) => report({ type: "disconnected", url, reason }));
  socket.onAny((name, payload) => {
    if (name !== "log") report({ type: "event", url, name, payload });
  });
}
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
