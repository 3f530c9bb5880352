// Load generator: N socket.io-client sockets (websocket transport, as a real client
// negotiates) in one process, counting and checking the camera events they receive.
// Usage: node subscriber.js '<json options>'  with options
//   {url, token?, sockets, subscribe?: [topics], recovery?: true (opt in to connection state
//   recovery: each event then carries its offset as an extra last argument)}
// Events carry MTX_QUERY "seq=<n>&t=<unix ms>" (back in details.query); per socket, topic
// and path the seq must run 0, 1, 2, ... (exactly once, in publish order).
// stdout: one JSON line per message: {status: "ready"} once every socket is connected
// (and subscribed); answers on stdin lines: "report" -> {status: "report", ...},
// "reset" -> {status: "reset"}, "wait <n>" -> {status: "reached"} once this process
// has received n events in all (since the last reset).
const { io } = require("socket.io-client");
const readline = require("readline");
const { performance } = require("perf_hooks");

const options = JSON.parse(process.argv[2]);
const TOPICS = new Set(["camera:ready", "camera:*", "nestmtx:*"]);
const BUCKET = Math.log(1.02); // latency histogram: 2% wide buckets from 10 us
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const now = () => performance.timeOrigin + performance.now();

let stats;
let waiting = null; // [target, done]
function reset() {
  stats = { total: 0, orderErrors: 0, hist: {}, first: null, last: null };
  for (const sub of subs) {
    sub.received = 0;
    sub.next = new Map(); // "topic path" -> next expected seq
  }
}

function onEvent(sub, topic, payload) {
  if (!TOPICS.has(topic)) return; // e.g. the log replay on connect
  const at = now();
  const query = new URLSearchParams(payload.details.query);
  const seq = Number(query.get("seq"));
  const latency = at - Number(query.get("t"));
  const key = topic + " " + payload.details.path;
  const expected = sub.next.get(key) || 0;
  if (seq !== expected) stats.orderErrors += 1;
  sub.next.set(key, seq + 1);
  sub.received += 1;
  stats.total += 1;
  stats.first = stats.first === null ? at : stats.first;
  stats.last = at;
  const bucket = latency > 0.01 ? Math.floor(Math.log(latency / 0.01) / BUCKET) : 0;
  stats.hist[bucket] = (stats.hist[bucket] || 0) + 1;
  if (waiting && stats.total >= waiting[0]) {
    waiting = null;
    print({ status: "reached" });
  }
}

function connect(sub) {
  return new Promise((resolve, reject) => {
    const socket = io(options.url, {
      transports: ["websocket"], reconnection: false, forceNew: true,
      auth: { ...(options.token ? { token: options.token } : {}),
              ...(options.recovery ? { recovery: true } : {}) },
    });
    sub.socket = socket;
    socket.onAny((topic, payload) => onEvent(sub, topic, payload));
    socket.on("disconnect", (reason) => print({ status: "disconnected", reason }));
    socket.on("connect_error", (err) => reject(err));
    socket.on("connect", () => {
      if (!options.subscribe) return resolve();
      socket.emit("subscribe", options.subscribe, () => resolve());
    });
  });
}

const subs = Array.from({ length: options.sockets }, () => ({}));
reset();

async function main() {
  for (let i = 0; i < subs.length; i += 50) { // a few at a time: handshakes cost the server
    await Promise.all(subs.slice(i, i + 50).map(connect));
  }
  print({ status: "ready", sockets: subs.length });
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, argument] = line.trim().split(" ");
  if (command === "report") {
    print({
      status: "report", received: subs.map((s) => s.received), orderErrors: stats.orderErrors,
      hist: stats.hist, first: stats.first, last: stats.last,
      connected: subs.filter((s) => s.socket.connected).length,
    });
  } else if (command === "reset") {
    reset();
    print({ status: "reset" });
  } else if (command === "wait") {
    if (stats.total >= Number(argument)) print({ status: "reached" });
    else waiting = [Number(argument), true];
  }
}).on("close", () => process.exit(0));

main().catch((err) => {
  print({ status: "connect_error", message: err.message });
  process.exit(1);
});
