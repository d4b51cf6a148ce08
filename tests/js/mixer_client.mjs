// JupyterLab's own @jupyterlab/services against a kernel-mixing relay, in two phases
// with a relay restart between them (tests/test_mixer_services.py drives it).
//
// Usage: node mixer_client.mjs <relay base URL>
// Environment:
//   RELAY_TOKEN        the relay's token (never on the command line)
//   MIXER_PHASE        "1" or "2"
//   MIXER_STATE        phase 2 only: JSON {"session_id", "session_path", "kernels": {backend: id}}
//                      (what phase 1 printed)
//   MIXER_CHECKPOINTS  "1": at each checkpoint print a JSON line {"checkpoint": ...} and
//                      wait for a line "continue" on stdin (the test looks at the relay
//                      meanwhile); any other line, or the end of stdin, aborts the run
//   MIXER_TIMEOUT_MS   per-operation timeout (default 60000)
//
// Phase 1: list the kernelspecs; start a kernel on each backend and ask it where it runs;
// start a notebook session on `python3` (backend a), run code, change the session's kernel
// to `b--python3`, run code again. The kernels and the session are left running.
// Phase 2 (a new relay on the same port): find the session by id, connect to it, run code;
// connect to phase 1's kernels by id, run code on each and shut them down; change the
// session's kernel to `eg--python3`, then back to `python3`, running code after each change;
// shut the session down and list sessions and kernels again.
//
// The script drives and reports; the test judges. It fails (exit 1, `mixer_client: ...` on
// stderr) only when the library throws or times out; it then shuts down what it started in
// this run. On success it prints one line of JSON {"phase": N, ...} as its last stdout line.

import readline from 'node:readline';

import services from '@jupyterlab/services';
import WebSocket from 'ws';

import { describe, withTimeout as withTimeoutOf } from './common.mjs';

const { KernelManager, KernelSpecManager, ServerConnection, SessionManager } = services;

// The library logs on the console; keep stdout for the JSON lines.
for (const level of ['log', 'info', 'debug', 'warn']) {
  console[level] = (...args) => console.error(...args);
}

const TIMEOUT_MS = Number(process.env.MIXER_TIMEOUT_MS || 60000);
const CODE = 'import os; print(os.environ["RELAY_TEST_BACKEND"])';
// backend -> kernelspec name on the relay, per the mixing rules (a is the primary).
const SPEC_OF = { a: 'python3', b: 'b--python3', eg: 'eg--python3' };

function fail(message) {
  process.stderr.write(`mixer_client: ${message}\n`);
  process.exit(1);
}

const baseUrl = process.argv[2] || process.env.RELAY_URL;
const token = process.env.RELAY_TOKEN ?? '';
const phase = process.env.MIXER_PHASE;
if (!baseUrl || !['1', '2'].includes(phase)) {
  fail('usage: MIXER_PHASE=1|2 RELAY_TOKEN=... node mixer_client.mjs <relay base URL>');
}

function withTimeout(promise, what, ms = TIMEOUT_MS) {
  return withTimeoutOf(promise, what, ms);
}

// Every session PATCH the library sends, with the model the relay answered.
const patches = [];

async function recordingFetch(input, init) {
  const response = await globalThis.fetch(input, init);
  const request = input instanceof Request ? input : new Request(input, init);
  if (request.method === 'PATCH' && new URL(request.url).pathname.includes('/api/sessions/')) {
    let body = null;
    try {
      body = await response.clone().json();
    } catch (error) {
      body = { unparsable: String(error) };
    }
    patches.push({ path: new URL(request.url).pathname, status: response.status, body });
  }
  return response;
}

// Checkpoints: the test inspects the relay between steps.
const stepwise = process.env.MIXER_CHECKPOINTS === '1';
const stdinLines = stepwise
  ? readline.createInterface({ input: process.stdin, terminal: false })[Symbol.asyncIterator]()
  : null;

async function checkpoint(name, data) {
  process.stdout.write(JSON.stringify({ checkpoint: name, phase: Number(phase), ...data }) + '\n');
  if (!stepwise) {
    return;
  }
  const next = await withTimeout(stdinLines.next(), `the test's answer at checkpoint ${name}`);
  if (next.done || next.value.trim() !== 'continue') {
    throw new Error(`stopped by the test at checkpoint ${name}: ${JSON.stringify(next.value)}`);
  }
}

// Run CODE on a kernel connection: what it printed and the execute_reply status.
async function whereRuns(kernel, what) {
  const output = [];
  const future = kernel.requestExecute({ code: CODE, store_history: false });
  future.onIOPub = (msg) => {
    const type = msg.header.msg_type;
    if (type === 'stream') {
      output.push(msg.content.text);
    } else if (type === 'error') {
      output.push(msg.content.traceback.join('\n'));
    }
  };
  const reply = await withTimeout(future.done, `execute_reply from ${what} (kernel ${kernel.id})`);
  return { status: reply.content.status, output: output.join('').trim() };
}

function sessionView(session) {
  return {
    id: session.id,
    path: session.path,
    kernel_id: session.kernel ? session.kernel.id : null,
    kernel_name: session.kernel ? session.kernel.name : null,
  };
}

// What the library's managers list now, for the ids this run cares about.
async function listed(sessions, kernels, sessionPath) {
  await withTimeout(sessions.refreshRunning(), 'listing sessions');
  await withTimeout(kernels.refreshRunning(), 'listing kernels');
  return {
    sessions_at_path: [...sessions.running()]
      .filter((m) => m.path === sessionPath)
      .map((m) => ({ id: m.id, kernel_id: m.kernel ? m.kernel.id : null })),
    kernels: [...kernels.running()].map((m) => ({ id: m.id, name: m.name })),
  };
}

// Change the session's kernel and run CODE on the new one.
async function switchKernel(session, name) {
  const before = sessionView(session);
  const patchCount = patches.length;
  await withTimeout(session.changeKernel({ name }), `changing the session's kernel to ${name}`);
  const after = sessionView(session);
  const patch = patches.length > patchCount ? patches[patches.length - 1] : null;
  if (!session.kernel) {
    throw new Error(`the session has no kernel after changing it to ${name}`);
  }
  const ran = await whereRuns(session.kernel, `the session's kernel ${name}`);
  return {
    to: name,
    before,
    after,
    patch_status: patch ? patch.status : null,
    patch_session_id: patch && patch.body ? patch.body.id : null,
    patch_kernel: patch && patch.body ? patch.body.kernel : null,
    ...ran,
  };
}

async function phase1(ctx) {
  const { specs, kernels, sessions, result } = ctx;
  await withTimeout(specs.ready, 'kernelspec manager ready');
  await withTimeout(specs.refreshSpecs(), 'listing kernelspecs');
  const listedSpecs = specs.specs;
  if (!listedSpecs) {
    throw new Error('no kernelspecs listed');
  }
  result.default_kernelspec = listedSpecs.default;
  result.kernelspecs = Object.fromEntries(
    Object.entries(listedSpecs.kernelspecs).map(([name, spec]) => [
      name,
      { name: spec.name, display_name: spec.display_name, language: spec.language },
    ]),
  );

  // One kernel on each backend, started by its mixed name.
  result.kernels = {};
  for (const [backend, name] of Object.entries(SPEC_OF)) {
    const kernel = await withTimeout(kernels.startNew({ name }), `starting a ${name} kernel`);
    ctx.startedKernels.push(kernel);
    result.kernels[backend] = {
      id: kernel.id,
      name: kernel.name,
      ...(await whereRuns(kernel, `the ${name} kernel`)),
    };
  }
  await checkpoint('kernels', { kernels: result.kernels });

  await withTimeout(sessions.ready, 'session manager ready');
  const path = `mix-${process.pid}.ipynb`;
  const session = await withTimeout(
    sessions.startNew({ path, name: path, type: 'notebook', kernel: { name: SPEC_OF.a } }),
    'starting a notebook session on python3',
  );
  ctx.session = session;
  if (!session.kernel) {
    throw new Error('the new session has no kernel');
  }
  result.session_id = session.id;
  result.session_path = session.path;
  result.session_start = {
    ...sessionView(session),
    ...(await whereRuns(session.kernel, "the session's python3 kernel")),
  };
  await checkpoint('session-a', { session: result.session_start });

  result.switch_to_b = await switchKernel(session, SPEC_OF.b);
  result.listed = await listed(sessions, kernels, path);
  result.ok = true;
}

async function phase2(ctx) {
  const { kernels, sessions, result } = ctx;
  const state = JSON.parse(process.env.MIXER_STATE || 'null');
  if (!state || !state.session_id || !state.session_path || !state.kernels) {
    throw new Error('MIXER_STATE must hold phase 1 session_id, session_path and kernels');
  }
  await withTimeout(sessions.ready, 'session manager ready');
  await withTimeout(kernels.ready, 'kernel manager ready');

  // Find phase 1's session as JupyterLab would after a reload: in the listing.
  const byId = await withTimeout(sessions.findById(state.session_id), 'finding the session by id');
  const byPath = await withTimeout(
    sessions.findByPath(state.session_path),
    'finding the session by path',
  );
  result.found_by_id = byId ? { id: byId.id, kernel: byId.kernel } : null;
  result.found_by_path = byPath ? { id: byPath.id, kernel: byPath.kernel } : null;
  if (!byId) {
    throw new Error(`session ${state.session_id} is not listed after the relay restart`);
  }
  const session = sessions.connectTo({ model: byId });
  ctx.session = session;
  if (!session.kernel) {
    throw new Error('the reconnected session has no kernel');
  }
  result.session_id = session.id;
  result.reconnected = {
    ...sessionView(session),
    ...(await whereRuns(session.kernel, "the reconnected session's kernel")),
  };
  await checkpoint('reconnected', { session: result.reconnected });

  // Phase 1's kernels, one per backend, by id through the new relay.
  await withTimeout(kernels.refreshRunning(), 'listing kernels');
  const running = new Map([...kernels.running()].map((m) => [m.id, m]));
  result.kernels = {};
  for (const [backend, id] of Object.entries(state.kernels)) {
    const model = running.get(id);
    if (!model) {
      throw new Error(`phase 1's ${backend} kernel ${id} is not listed after the relay restart`);
    }
    const kernel = kernels.connectTo({ model });
    ctx.startedKernels.push(kernel);
    const ran = await whereRuns(kernel, `phase 1's ${backend} kernel`);
    await withTimeout(kernel.shutdown(), `shutting down phase 1's ${backend} kernel`);
    result.kernels[backend] = { id: kernel.id, name: model.name, ...ran };
  }

  result.switch_to_eg = await switchKernel(session, SPEC_OF.eg);
  await checkpoint('session-eg', { session: sessionView(session) });
  result.switch_to_a = await switchKernel(session, SPEC_OF.a);
  await checkpoint('session-a', { session: sessionView(session) });

  result.last_kernel_id = session.kernel ? session.kernel.id : null;
  await withTimeout(session.shutdown(), 'shutting the session down');
  ctx.session = null;
  result.listed_after_shutdown = await listed(sessions, kernels, state.session_path);
  result.ok = true;
}

async function main() {
  const serverSettings = ServerConnection.makeSettings({
    baseUrl,
    wsUrl: baseUrl.replace(/^http/, 'ws'),
    token,
    appendToken: true,
    WebSocket,
    fetch: recordingFetch,
    Request: globalThis.Request,
    Headers: globalThis.Headers,
  });
  const specs = new KernelSpecManager({ serverSettings });
  const kernels = new KernelManager({ serverSettings });
  const sessions = new SessionManager({ serverSettings, kernelManager: kernels });
  const ctx = {
    specs,
    kernels,
    sessions,
    result: { phase: Number(phase), ok: false },
    startedKernels: [],
    session: null,
  };
  let succeeded = false;
  try {
    await (phase === '1' ? phase1(ctx) : phase2(ctx));
    succeeded = true;
  } finally {
    if (!succeeded) {
      // Leave nothing running that this run started or took over.
      const cleanup = [];
      if (ctx.session && !ctx.session.isDisposed) {
        cleanup.push(ctx.session.shutdown());
      }
      for (const kernel of ctx.startedKernels) {
        if (!kernel.isDisposed) {
          cleanup.push(kernel.shutdown());
        }
      }
      await withTimeout(Promise.allSettled(cleanup), 'cleanup', 15000).catch(() => {});
    }
    sessions.dispose();
    kernels.dispose();
    specs.dispose();
  }
  return ctx.result;
}

main().then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
  },
  (error) => fail(describe(error)),
);
