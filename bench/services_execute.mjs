// Kernel execute round trips with JupyterLab's own client, @jupyterlab/services.
//
// Usage: node services_execute.mjs <server base URL> <kernel id> <count> [warmup]
//   (the server's token in BENCH_TOKEN, passed as JupyterLab passes it)
//
// Connects to a running kernel as JupyterLab does (its websocket, the v1
// protocol when offered), waits for it to be idle, then runs `1` <count> times
// in sequence: each execute is timed from requestExecute to its execute_reply,
// and the next starts once the kernel is idle again. Prints one line of JSON:
// {"protocol": ..., "times_ms": [...]}. Failures go to stderr, exit non-zero.

import services from '@jupyterlab/services';
import WebSocket from 'ws';

const { KernelManager, ServerConnection } = services;

// The library logs on the console; keep stdout for the result.
for (const level of ['log', 'info', 'debug', 'warn']) {
  console[level] = (...args) => process.stderr.write(args.join(' ') + '\n');
}

function fail(message) {
  process.stderr.write(`services_execute: ${message}\n`);
  process.exit(1);
}

const [baseUrl, kernelId, countArg, warmupArg] = process.argv.slice(2);
const count = Number(countArg);
const warmup = Number(warmupArg ?? 3);
if (!baseUrl || !kernelId || !(count > 0)) {
  fail('usage: node services_execute.mjs <server base URL> <kernel id> <count> [warmup]');
}

let protocol = null;
class RecordingWebSocket extends WebSocket {
  constructor(url, protocols, options) {
    super(url, protocols, { ...options, perMessageDeflate: false });
    this.addEventListener('open', () => {
      protocol = this.protocol;
    });
  }
}

function withTimeout(promise, what, ms = 60000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function executeOnce(kernel) {
  const started = performance.now();
  let replied = null;
  const future = kernel.requestExecute({ code: '1', silent: false, store_history: false });
  future.onReply = () => {
    replied = performance.now();
  };
  const reply = await withTimeout(future.done, 'execute_reply and idle');
  if (reply.content.status !== 'ok') {
    throw new Error(`execute_reply status ${reply.content.status}`);
  }
  return replied - started;
}

async function main() {
  const serverSettings = ServerConnection.makeSettings({
    baseUrl,
    wsUrl: baseUrl.replace(/^http/, 'ws'),
    token: process.env.BENCH_TOKEN ?? '',
    appendToken: true,
    WebSocket: RecordingWebSocket,
    fetch: globalThis.fetch,
    Request: globalThis.Request,
    Headers: globalThis.Headers,
  });
  const kernels = new KernelManager({ serverSettings });
  const kernel = kernels.connectTo({ model: { id: kernelId, name: 'python3' } });
  try {
    await withTimeout(kernel.info, 'kernel_info_reply');
    for (let i = 0; i < warmup; i += 1) {
      await executeOnce(kernel);
    }
    const times = [];
    for (let i = 0; i < count; i += 1) {
      times.push(await executeOnce(kernel));
    }
    return { protocol, times_ms: times };
  } finally {
    kernel.dispose();
    kernels.dispose();
  }
}

main().then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
  },
  (error) => fail(error && error.stack ? error.stack : String(error)),
);
