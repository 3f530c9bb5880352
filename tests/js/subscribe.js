// A real socket.io-client subscriber for the tests: prints one JSON line per received
// event ({"topic", "payload"}), plus {"status": "connected"} or {"status": "connect_error"}.
// Usage: node subscribe.js <url> [token]. Exits when stdin closes.
const { io } = require("socket.io-client");

const [url, token] = process.argv.slice(2);
const socket = io(url, {
  transports: ["websocket"],
  reconnection: false,
  auth: token ? { token } : {},
});
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

socket.on("connect", () => print({ status: "connected" }));
socket.on("connect_error", (err) => print({ status: "connect_error", message: err.message }));
socket.onAny((topic, payload) => print({ topic, payload }));
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
process.stdin.resume();
