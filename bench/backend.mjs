// The benchmark's node backend: a websocket echo and an upload sink.
//
// Usage: node backend.mjs   (prints the port it listens on, on 127.0.0.1)
//
// - a websocket upgrade on any path: every message is sent back as it came
//   (text or binary), with no size cap and no compression;
// - POST/PUT /upload: reads the body, discards it, answers {"bytes": N};
// - any other request: 200 with a small JSON body (the relay's health check
//   asks /api/status).
// `ws` is the websocket library most node servers use; node's event loop
// echoes small messages far faster than any proxy here forwards them, so the
// echo is not the bottleneck.

import http from 'node:http';
import { WebSocketServer } from 'ws';

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/upload')) {
    let bytes = 0;
    req.on('data', (chunk) => {
      bytes += chunk.length;
    });
    req.on('end', () => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ bytes }));
    });
    return;
  }
  req.resume();
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end('{"backend": "node", "ok": true}');
});
server.keepAliveTimeout = 120000;

const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 0 });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
