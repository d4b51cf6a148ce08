// What the node clients of the tests share: a bound on every wait, and readable errors.

import services from '@jupyterlab/services';

const { ServerConnection } = services;

// Reject with "timed out after <ms> ms: <what>" unless `promise` settles first.
export function withTimeout(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// One line for an error: the HTTP status and URL of a server's refusal, else the stack.
export function describe(error) {
  if (error instanceof ServerConnection.ResponseError) {
    return `${error.message} (HTTP ${error.response.status} ${error.response.url})`;
  }
  return error && error.stack ? error.stack : String(error);
}
