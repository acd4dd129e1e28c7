// End-to-end: both protocol eras bridged, towards a client of the older protocol. The official
// TypeScript SDK client (1.32.2, which speaks 2025-11-25 only) answers elicitation, sampling and
// roots requests with its own handlers; behind the gateway, the official Python SDK's 2026-07-28
// server (tests/clients/python/era_server.py, as a stdio child) asks with `input_required`
// results instead. The gateway turns each into a request to the client and retries with the
// answers; the client only ever sees requests and, at the end, the tool's result. Over /mcp
// (Streamable HTTP) and /ws (the SDK's WebSocket transport). The fixture (`--modern`) supplies
// what the Python SDK will not send: a malformed input_required result.
// Skipped (saying so) without the Python venv ($SWITCHBOARD_VENV or ~/.cache/switchboard/venv).
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { McpError } from '@modelcontextprotocol/sdk/types.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

import { connectClient, connectWsClient, fixtureServer, startGateway, textOf, waitForTools } from './gateway.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const venv = process.env.SWITCHBOARD_VENV ?? join(homedir(), '.cache', 'switchboard', 'venv');
const python = join(venv, 'bin', 'python');
const haveVenv = existsSync(python);

const CAPABILITIES = { elicitation: { form: {} }, sampling: {}, roots: {} };
const ROOTS = [{ uri: 'file:///tmp/switchboard-e2e/eras', name: 'eras' }];
/** A Python start on a busy machine can take most of a minute. */
const START_MS = 150_000;
const CALL_MS = 60_000;

/** A client answering every request the server asks, recording them. */
function answering() {
  const asks = [];
  const setup = (client) => {
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      asks.push(req.method);
      return { action: 'accept', content: { name: 'Ada' } };
    });
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      asks.push(req.method);
      return { role: 'assistant', content: { type: 'text', text: 'hi Ada' }, model: 'm', stopReason: 'endTurn' };
    });
    client.setRequestHandler(ListRootsRequestSchema, async (req) => {
      asks.push(req.method);
      return { roots: ROOTS };
    });
  };
  return { asks, setup };
}

const SCENARIOS = [
  ['era__ask_name', {}, 'Hello, Ada!', ['elicitation/create']],
  ['era__ask_model', { prompt: 'greet' }, 'the model said: hi Ada', ['sampling/createMessage']],
  ['era__ask_roots', {}, `roots: ${ROOTS[0].uri}`, ['roots/list']],
  ['era__ask_both', {}, 'Hello, Ada! / hi Ada', ['elicitation/create', 'sampling/createMessage']],
];

describe('a 2026-07-28 server (Python SDK) asks a 2025-11-25 client (TypeScript SDK)', { skip: haveVenv ? false : `no Python venv at ${venv}` }, () => {
  let gw;
  before(async () => {
    gw = await startGateway([
      { name: 'era', command: python, args: [join(here, '..', 'python', 'era_server.py')] },
      fixtureServer('mx', ['--modern']),
    ]);
  });
  after(async () => {
    await gw?.stop();
  });

  for (const [transport, connect] of [
    ['/mcp', (name, opts) => connectClient(gw, name, opts)],
    ['/ws', (name, opts) => connectWsClient(gw, '/ws', name, opts)],
  ]) {
    test(`over ${transport}: elicitation, sampling, roots and two rounds come as requests`, async () => {
      const seen = answering();
      const c = await connect(`eras-ts${transport.replace('/', '-')}`, { capabilities: CAPABILITIES, setup: seen.setup });
      try {
        await waitForTools(c.client, SCENARIOS.map((s) => s[0]), START_MS);
        for (const [tool, args, said, asked] of SCENARIOS) {
          seen.asks.length = 0;
          const r = await c.client.callTool({ name: tool, arguments: args }, undefined, { timeout: CALL_MS });
          assert.equal(textOf(r), said, tool);
          assert.deepEqual(seen.asks, asked, `${tool}: what the client was asked`);
          assert.equal(r.resultType, undefined, 'an older client sees no resultType');
        }
        seen.asks.length = 0;
        await assert.rejects(
          c.client.callTool({ name: 'era__ask_forever', arguments: {} }, undefined, { timeout: CALL_MS }),
          (e) => e instanceof McpError && /after 8 rounds/.test(e.message),
        );
        assert.equal(seen.asks.length, 8, 'once per round, then the gateway gives up');
      } finally {
        await c.close();
      }
    });
  }

  test('a malformed input_required fails the call saying why; the client is not asked', async () => {
    const seen = answering();
    const c = await connectClient(gw, 'eras-ts-malformed', { capabilities: CAPABILITIES, setup: seen.setup });
    try {
      await waitForTools(c.client, ['mx__input'], START_MS);
      await assert.rejects(
        c.client.callTool({ name: 'mx__input', arguments: { result: { resultType: 'input_required', inputRequests: [] } } }),
        (e) => e instanceof McpError && /malformed input_required/.test(e.message) && /not an object/.test(e.message),
      );
      assert.deepEqual(seen.asks, []);
    } finally {
      await c.close();
    }
  });
});
