// End-to-end: MCP over WebSocket (`/ws`) with the official TypeScript SDK's own
// WebSocketClientTransport and Client, running on the `ws` npm package (Node 20 has no global
// WebSocket). The token travels the browser way, as a `bearer.<token>` subprotocol.
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { WebSocketClientTransport } from '@modelcontextprotocol/sdk/client/websocket.js';

import { fixtureServer, pair, REQUEST_TIMEOUT_MS, startGateway, textOf } from './gateway.mjs';

/** The SDK's transport, on `ws`, offering the token as a subprotocol next to its own `mcp`. */
async function connectWs(gw, token) {
  const wsUrl = new URL('/ws', gw.url.replace('http://', 'ws://'));
  // `allowSynchronousEvents: false` delivers each message in its own task, as a browser's
  // WebSocket does (and as the SDK's transport expects: it handles notifications a microtask
  // later than responses, so two frames handled in one task would put a call's last progress
  // after its result).
  globalThis.WebSocket = class extends WebSocket {
    constructor(url, protocol) {
      super(url, [protocol, `bearer.${token}`], { allowSynchronousEvents: false });
    }
  };
  const transport = new WebSocketClientTransport(wsUrl);
  const client = new Client({ name: 'switchboard-e2e-ws', version: '0.0.0' });
  await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  return { client, transport };
}

/** A raw `ws` socket with the token in the Authorization header; resolves once open. */
function rawSocket(gw, token) {
  const ws = new WebSocket(new URL('/ws', gw.url.replace('http://', 'ws://')), {
    headers: { Authorization: `Bearer ${token}` },
  });
  const frames = [];
  const waiters = [];
  ws.on('message', (data) => {
    frames.push(JSON.parse(data.toString()));
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (pred = () => true) => {
    const deadline = Date.now() + REQUEST_TIMEOUT_MS;
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      const left = deadline - Date.now();
      assert.ok(left > 0, `no matching frame in time; have ${JSON.stringify(frames)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, left);
      });
    }
  };
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, next }));
    ws.once('error', reject);
  });
}

describe('MCP over WebSocket with the TypeScript SDK on `ws`', { timeout: 120_000 }, () => {
  let gw;
  let token;
  let conn;

  before(async () => {
    gw = await startGateway([fixtureServer()]);
    token = (await pair(gw, 'switchboard-e2e-ws')).token;
    conn = await connectWs(gw, token);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const { tools } = await conn.client.listTools();
      if (tools.some((t) => t.name === 'fixture__slow')) break;
      assert.ok(Date.now() < deadline, 'fixture tools never appeared');
      await new Promise((r) => setTimeout(r, 50));
    }
  }, { timeout: 60_000 });

  after(async () => {
    await conn?.client.close().catch(() => {});
    await gw?.stop();
  });

  test('initialize, list and call through the SDK client', async () => {
    assert.equal(conn.client.getServerVersion()?.name, 'switchboard');
    const { tools } = await conn.client.listTools();
    const names = tools.map((t) => t.name);
    for (const t of ['fixture__echo', 'fixture__slow', 'switchboard__health_snapshot']) {
      assert.ok(names.includes(t), `${t} in ${names}`);
    }
    const r = await conn.client.callTool({ name: 'fixture__echo', arguments: { text: 'over ws' } });
    assert.equal(textOf(r), 'over ws');
  });

  test('progress reaches the SDK under its own token, before the result', async () => {
    const seen = [];
    const r = await conn.client.callTool(
      { name: 'fixture__slow', arguments: { steps: 10, step_ms: 10 } },
      undefined,
      { onprogress: (p) => seen.push(p), timeout: REQUEST_TIMEOUT_MS },
    );
    assert.equal(textOf(r), 'done after 10 steps');
    assert.deepEqual(seen.map((p) => p.progress), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(seen[0].total, 10);
  });

  test('four 200 ms calls on one socket overlap', async () => {
    const t0 = Date.now();
    const results = await Promise.all(
      [1, 2, 3, 4].map(() =>
        conn.client.callTool({ name: 'fixture__slow', arguments: { steps: 2, step_ms: 100 } }),
      ),
    );
    const took = Date.now() - t0;
    for (const r of results) assert.equal(textOf(r), 'done after 2 steps');
    assert.ok(took < 600, `four 200 ms calls took ${took} ms`);
  });

  test('an unknown tool is a JSON-RPC error the SDK raises', async () => {
    await assert.rejects(
      conn.client.callTool({ name: 'fixture__nope', arguments: {} }),
      (err) => err.code === -32602 && /unknown tool 'fixture__nope'/.test(err.message),
    );
  });

  test('raw frames: parse error, invalid request, method not found, ids kept', async () => {
    const { ws, next } = await rawSocket(gw, token);
    try {
      ws.send('{"jsonrpc": "2.0", "id": 1,');
      const parse = await next((f) => f.error);
      assert.deepEqual([parse.id, parse.error.code], [null, -32700]);
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 'x', method: 'no/such' }));
      const missing = await next((f) => f.id === 'x');
      assert.equal(missing.error.code, -32601);
      ws.send(JSON.stringify({ id: 3, method: 'ping' }));
      const invalid = await next((f) => f.id === 3);
      assert.equal(invalid.error.code, -32600);
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 'slow', method: 'tools/call',
        params: { name: 'fixture__slow', arguments: { steps: 2, step_ms: 100 } } }));
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 'fast', method: 'ping' }));
      const first = await next((f) => f.id === 'slow' || f.id === 'fast');
      assert.equal(first.id, 'fast', 'a fast request is not held up by a slow one');
      const slow = await next((f) => f.id === 'slow');
      assert.equal(slow.result.content[0].text, 'done after 2 steps');
    } finally {
      ws.close();
    }
  });

  test('a plain GET to /ws is 426', async () => {
    const res = await fetch(`${gw.url}/ws`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 426);
  });
});
