// The websocket load generator: ping-pong or pipelined streaming against an echo.
//
// Usage: node ws_load.mjs <ws URL> <mode> <connections> <bytes> <seconds> [window]
//   mode pingpong: each connection sends a text message of <bytes>, waits for
//                  its echo, and sends the next;
//   mode stream:   each connection keeps <window> binary messages of <bytes>
//                  in flight, sending one more as each echo arrives.
// The relay's token (or any header) comes in BENCH_HEADERS, a JSON object.
// Prints one line of JSON: messages, seconds, messages_per_s, mb_per_s (echoed
// payload, one direction, 10^6 bytes), p50_ms, p99_ms (send to echo), errors.
// Node rather than Python: one node process drives 8 connections faster than
// any proxy here forwards them, so the load generator is not the bottleneck.

import WebSocket from 'ws';

const [url, mode, connArg, bytesArg, secondsArg, windowArg] = process.argv.slice(2);
const connections = Number(connArg);
const size = Number(bytesArg);
const seconds = Number(secondsArg);
const window = mode === 'stream' ? Number(windowArg || 4) : 1;
const headers = JSON.parse(process.env.BENCH_HEADERS || '{}');

function fail(message) {
  process.stderr.write(`ws_load: ${message}\n`);
  process.exit(1);
}

if (!url || !['pingpong', 'stream'].includes(mode) || !(connections > 0) || !(size > 0)) {
  fail('usage: node ws_load.mjs <ws URL> pingpong|stream <connections> <bytes> <seconds> [window]');
}

const payload = mode === 'stream' ? Buffer.alloc(size, 0x61) : 'x'.repeat(size);
const rtts = [];
let messages = 0;
let errors = 0;
let measuring = false;
let stopping = false;

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false, maxPayload: 0 });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

function drive(ws) {
  // Send times of the messages in flight, oldest first: an echo answers the oldest.
  const sent = [];
  const send = () => {
    sent.push(process.hrtime.bigint());
    ws.send(payload, { binary: mode === 'stream' });
  };
  return new Promise((resolve) => {
    ws.on('message', (data) => {
      const now = process.hrtime.bigint();
      const started = sent.shift();
      if (data.length !== size) {
        errors += 1;
      }
      if (measuring) {
        messages += 1;
        rtts.push(Number(now - started) / 1e6);
      }
      if (!stopping) {
        send();
      } else if (sent.length === 0) {
        resolve();
      }
    });
    ws.on('close', () => resolve());
    ws.on('error', () => {
      errors += 1;
      resolve();
    });
    for (let i = 0; i < window; i += 1) {
      send();
    }
  });
}

function percentile(sorted, q) {
  if (sorted.length === 0) {
    return null;
  }
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main() {
  let sockets;
  try {
    sockets = await Promise.all(Array.from({ length: connections }, open));
  } catch (error) {
    fail(`cannot open the websockets to ${url.replace(/\?.*/, '')}: ${error.message}`);
  }
  const running = sockets.map(drive);
  // A short warm-up, not counted: connections and buffers settle.
  await new Promise((r) => setTimeout(r, Math.min(1000, seconds * 200)));
  measuring = true;
  const start = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  measuring = false;
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  stopping = true;
  await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, 10000))]);
  for (const ws of sockets) {
    ws.terminate();
  }
  rtts.sort((a, b) => a - b);
  const result = {
    messages,
    seconds: elapsed,
    messages_per_s: messages / elapsed,
    mb_per_s: (messages * size) / elapsed / 1e6,
    p50_ms: percentile(rtts, 0.5),
    p99_ms: percentile(rtts, 0.99),
    errors,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(errors ? 2 : 0);
}

main();
