// End-to-end: `sessions = "isolated"` with real parts only: @modelcontextprotocol/server-filesystem
// behind the gateway with no directories of its own (it serves its client's roots), and two
// official TypeScript SDK clients on /mcp, each with roots of its own. Each client gets its own
// instance of the server, so each sees only its own allowed directories, before and after its
// roots change; a shared instance could not tell them apart.
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { mkdtemp, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { ListRootsRequestSchema } from '@modelcontextprotocol/sdk/types.js';

import {
  apiToken,
  connectClient,
  filesystemServer,
  REQUEST_TIMEOUT_MS,
  sleep,
  startGateway,
  textOf,
  waitForTools,
} from './gateway.mjs';

const TOOL = 'files__list_allowed_directories';

let gw;
let base;

before(async () => {
  base = await realpath(await mkdtemp(join(tmpdir(), 'switchboard-isolated-')));
  gw = await startGateway([filesystemServer('files', { sessions: 'isolated' })]);
});

after(async () => {
  await gw?.stop();
  if (base) await rm(base, { recursive: true, force: true });
});

/** A client whose roots are `dirs()` (asked each time the server asks). */
async function withRoots(name, dirs) {
  return connectClient(gw, name, {
    capabilities: { roots: { listChanged: true } },
    setup: (client) =>
      client.setRequestHandler(ListRootsRequestSchema, async () => ({
        roots: dirs().map((d) => ({ uri: pathToFileURL(d).href, name: d })),
      })),
  });
}

/** The directories the client's instance allows, as it lists them. */
async function allowed(client) {
  const result = await client.callTool({ name: TOOL, arguments: {} }, undefined, { timeout: REQUEST_TIMEOUT_MS });
  assert.notEqual(result.isError, true, textOf(result));
  return textOf(result)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('/'));
}

/** Polls (bounded) until the client's allowed directories are `want`. */
async function waitAllowed(client, want) {
  const deadline = Date.now() + 15_000;
  let got;
  while (Date.now() < deadline) {
    got = await allowed(client);
    if (JSON.stringify(got) === JSON.stringify(want)) return got;
    await sleep(100);
  }
  assert.deepEqual(got, want);
}

/** The gateway's view of `files` (`GET /api/servers`). */
async function files() {
  const res = await fetch(`${gw.url}/api/servers`, {
    headers: { Authorization: `Bearer ${await apiToken(gw)}` },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  assert.ok(res.ok, `GET /api/servers: ${res.status}`);
  return (await res.json()).servers.find((s) => s.name === 'files');
}

/** Polls (bounded) until `files` has `n` isolated instances. */
async function waitInstances(n) {
  const deadline = Date.now() + 15_000;
  let s;
  while (Date.now() < deadline) {
    s = await files();
    if (s.instances === n) return s;
    await sleep(100);
  }
  assert.equal(s.instances, n, JSON.stringify(s));
}

test('each client session has its own filesystem server, allowing only its own roots', async () => {
  const dirA = await mkdtempIn('a-');
  const dirB = await mkdtempIn('b-');
  const dirA2 = await mkdtempIn('a2-');
  let rootsA = [dirA];
  const a = await withRoots('iso-a', () => rootsA);
  const b = await withRoots('iso-b', () => [dirB]);
  try {
    await waitForTools(a.client, [TOOL]);
    assert.equal((await files()).instances, 0, 'a list starts no instance');
    await waitAllowed(a.client, [dirA]);
    await waitAllowed(b.client, [dirB]);
    assert.equal((await files()).sessions, 'isolated');
    assert.equal((await files()).instances, 2);

    // a's roots change: its instance hears it and asks again; b's is untouched
    rootsA = [dirA2];
    await a.client.sendRootsListChanged();
    await waitAllowed(a.client, [dirA2]);
    assert.deepEqual(await allowed(b.client), [dirB]);
  } finally {
    await a.close();
    await b.close();
  }
  // the sessions ended (DELETE): their instances stop
  await waitInstances(0);
});

async function mkdtempIn(prefix) {
  return realpath(await mkdtemp(join(base, prefix)));
}
