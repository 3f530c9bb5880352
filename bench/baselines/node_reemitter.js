// Baseline: what a user would write instead, a bare Node.js socket.io server on its
// defaults that re-emits each hook POST as the product's three events.
// Usage: node node_reemitter.js <port>
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
  const match = /^\/hooks\/(\w+)$/.exec(req.url);
  if (req.method !== "POST" || !match) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const vars = JSON.parse(Buffer.concat(chunks).toString());
    const payload = {
      domain: "camera", entity: null, event: match[1],
      details: { path: vars.MTX_PATH, query: vars.MTX_QUERY || "", name: null, enabled: false },
      at: new Date().toISOString(),
    };
    for (const topic of [`camera:${match[1]}`, "camera:*", "nestmtx:*"]) io.emit(topic, payload);
    res.writeHead(202, { "content-type": "application/json" }).end('{"accepted":true}');
  });
});
const io = new Server(server, { cors: { origin: "*" } });
server.listen(port, "127.0.0.1");
