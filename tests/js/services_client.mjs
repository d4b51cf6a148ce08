// JupyterLab's own client library, @jupyterlab/services, against a relay.
//
// Usage: node services_client.mjs <relay base URL> [token]
//   (or RELAY_URL / RELAY_TOKEN in the environment)
//
// Lists the kernelspecs, starts a session with a python3 kernel for a notebook
// path, runs `print(6*7)`, checks that the kernel printed "42\n", shuts the
// session down, and prints one line of JSON on stdout. Any failure prints
// `services_client: <what went wrong>` on stderr and exits non-zero.

import services from '@jupyterlab/services';
import WebSocket from 'ws';

import { describe, withTimeout as withTimeoutOf } from './common.mjs';

const { KernelManager, KernelSpecAPI, KernelSpecManager, ServerConnection, SessionManager } = services;

// The library logs on the console (e.g. "Starting WebSocket: ..."); keep stdout for the result.
for (const level of ['log', 'info', 'debug']) {
  console[level] = (...args) => console.error(...args);
}

const TIMEOUT_MS = Number(process.env.SERVICES_CLIENT_TIMEOUT_MS || 90000);

function fail(message) {
  process.stderr.write(`services_client: ${message}\n`);
  process.exit(1);
}

const baseUrl = process.argv[2] || process.env.RELAY_URL;
const token = process.argv[3] ?? process.env.RELAY_TOKEN ?? '';
if (!baseUrl) {
  fail('usage: node services_client.mjs <relay base URL> [token]');
}

// Every websocket JupyterLab opens, with what it offered and what the server chose.
const sockets = [];

class RecordingWebSocket extends WebSocket {
  constructor(url, protocols, options) {
    super(url, protocols, options);
    const entry = {
      offered: Array.isArray(protocols) ? [...protocols] : protocols ? [protocols] : [],
      protocol: null,
      closeCode: null,
    };
    sockets.push(entry);
    this.addEventListener('open', () => {
      entry.protocol = this.protocol;
    });
    this.addEventListener('close', (event) => {
      entry.closeCode = event.code;
    });
  }
}

function withTimeout(promise, what, ms = TIMEOUT_MS) {
  return withTimeoutOf(promise, what, ms);
}

async function main() {
  const serverSettings = ServerConnection.makeSettings({
    baseUrl,
    wsUrl: baseUrl.replace(/^http/, 'ws'),
    token,
    appendToken: true,
    WebSocket: RecordingWebSocket,
    fetch: globalThis.fetch,
    Request: globalThis.Request,
    Headers: globalThis.Headers,
  });

  const specs = new KernelSpecManager({ serverSettings });
  const kernels = new KernelManager({ serverSettings });
  const sessions = new SessionManager({ serverSettings, kernelManager: kernels });
  const result = { ok: false };
  let session = null;
  // The managers poll and report failures as a signal rather than throwing.
  let connectionError = null;
  for (const manager of [specs, kernels, sessions]) {
    manager.connectionFailure.connect((_, error) => {
      connectionError = error;
    });
  }
  try {
    // The REST call first: unlike the managers, it throws the server's answer (401, 502...).
    await withTimeout(KernelSpecAPI.getSpecs(serverSettings), 'GET api/kernelspecs');
    await withTimeout(specs.ready, 'kernelspec manager ready');
    await withTimeout(specs.refreshSpecs(), 'listing kernelspecs');
    const listed = specs.specs;
    if (!listed || !listed.kernelspecs || !listed.kernelspecs.python3) {
      const why = connectionError ? describe(connectionError) : JSON.stringify(listed);
      throw new Error(`no python3 kernelspec listed: ${why}`);
    }
    result.kernelspecs = Object.keys(listed.kernelspecs).sort();
    result.default_kernelspec = listed.default;

    await withTimeout(sessions.ready, 'session manager ready');
    const path = `services-client-${process.pid}.ipynb`;
    session = await withTimeout(
      sessions.startNew({ path, name: path, type: 'notebook', kernel: { name: 'python3' } }),
      'starting a session',
    );
    const kernel = session.kernel;
    if (!kernel) {
      throw new Error('the new session has no kernel');
    }
    result.session_id = session.id;
    result.kernel_id = kernel.id;
    result.session_path = session.path;

    const info = await withTimeout(kernel.info, 'kernel_info_reply');
    result.kernel_language = info.language_info && info.language_info.name;

    const output = [];
    const future = kernel.requestExecute({ code: 'print(6*7)', store_history: false });
    future.onIOPub = (msg) => {
      const type = msg.header.msg_type;
      if (type === 'stream') {
        output.push(msg.content.text);
      } else if (type === 'error') {
        output.push(msg.content.traceback.join('\n'));
      }
    };
    const reply = await withTimeout(future.done, 'execute_reply for print(6*7)');
    result.execute_status = reply.content.status;
    result.output = output.join('');
    if (reply.content.status !== 'ok') {
      throw new Error(`execute_reply status ${reply.content.status}: ${result.output}`);
    }
    if (result.output !== '42\n') {
      throw new Error(`expected the kernel to print "42\\n", got ${JSON.stringify(result.output)}`);
    }

    const kernelSocket = sockets.find((s) => s.protocol !== null);
    result.protocol = kernelSocket ? kernelSocket.protocol : null;
    result.offered_protocols = kernelSocket ? kernelSocket.offered : null;
    result.websockets = sockets.length;

    await withTimeout(session.shutdown(), 'shutting the session down');
    session = null;
    await withTimeout(sessions.refreshRunning(), 'listing sessions');
    const left = [...sessions.running()].filter((s) => s.id === result.session_id);
    if (left.length) {
      throw new Error(`session ${result.session_id} still listed after shutdown`);
    }
    result.ok = true;
  } finally {
    if (session) {
      // A failure after the session started: do not leave a kernel running.
      await withTimeout(session.shutdown(), 'cleanup shutdown', 15000).catch(() => {});
    }
    sessions.dispose();
    kernels.dispose();
    specs.dispose();
  }
  return result;
}

main().then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
  },
  (error) => fail(describe(error)),
);
