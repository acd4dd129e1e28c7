// End-to-end: pairing, bearer tokens, roles and revocation, with plain fetch and the official
// TypeScript MCP SDK client (Streamable HTTP) against a real Switchboard gateway.
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import {
  connectClient,
  fixtureServer,
  listAllTools,
  pair,
  pairingCode,
  postPair,
  REQUEST_TIMEOUT_MS,
  sleep,
  startGateway,
  textOf,
  unpair,
  waitForTools,
} from './gateway.mjs';

const ALL_FIXTURE_TOOLS = [
  'fixture__echo',
  'fixture__add',
  'fixture__slow',
  'fixture__fail',
  'switchboard__health_snapshot',
  'switchboard__telemetry_snapshot',
];

/** A JSON-RPC initialize request body for raw POST /mcp. */
const initializeBody = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: {
    protocolVersion: '2025-11-25',
    capabilities: {},
    clientInfo: { name: 'switchboard-e2e-raw', version: '0.0.0' },
  },
});

function postMcp(gw, headers = {}) {
  return fetch(gw.mcpUrl, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      Accept: 'application/json, text/event-stream',
      ...headers,
    },
    body: initializeBody,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
}

/** Reads a JSON body, failing with the raw text if it is not JSON. */
async function jsonBody(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    assert.fail(`expected a JSON body (status ${res.status}), got: ${text}`);
  }
}

async function withGatewayLogs(gw, fn) {
  try {
    await fn();
  } catch (err) {
    if (gw) {
      console.error(`--- gateway stderr (${gw.mcpUrl ?? 'not started'}) ---\n${gw.logs()}--- end ---`);
    }
    throw err;
  }
}

const call = (client, name, args) =>
  client.callTool({ name, arguments: args }, undefined, { timeout: REQUEST_TIMEOUT_MS });

/** Calls `name` expecting a JSON-RPC error; resolves to it (fails if the call succeeds). */
async function callError(client, name, args) {
  let res;
  try {
    res = await call(client, name, args);
  } catch (err) {
    return err;
  }
  assert.fail(`${name} should have been refused, got ${JSON.stringify(res)}`);
}

describe('gateway auth: pairing, roles, revocation', { timeout: 180_000 }, () => {
  let gw;
  const conns = [];

  const connect = async (name, options) => {
    const conn = await connectClient(gw, name, options);
    conns.push(conn);
    return conn;
  };

  before(async () => {
    gw = await startGateway([fixtureServer()]);
    await withGatewayLogs(gw, async () => {
      // Wait (as a default-role client) until the upstream fixture's tools are listed.
      const conn = await connect('switchboard-e2e-ts-warmup');
      await waitForTools(conn.client, ALL_FIXTURE_TOOLS);
    });
  }, { timeout: 60_000 });

  after(async () => {
    for (const conn of conns) await conn.close();
    const res = await gw?.stop();
    if (res?.forced) console.error('gateway did not exit within 5 s of SIGTERM; killed it');
  }, { timeout: 60_000 });

  const it = (name, fn) => test(name, { timeout: 60_000 }, () => withGatewayLogs(gw, fn));

  it('POST /mcp without a token is 401 token_required; /healthz needs none', async () => {
    const res = await postMcp(gw);
    assert.equal(res.status, 401);
    const body = await jsonBody(res);
    assert.equal(body?.error?.code, 'token_required', JSON.stringify(body));

    const health = await fetch(`${gw.url}/healthz`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    await health.arrayBuffer();
    assert.equal(health.status, 200);
  });

  it('POST /mcp with a wrong token is 401 token_invalid', async () => {
    for (const token of [`sb_${randomBytes(32).toString('hex')}`, 'not-a-token']) {
      const res = await postMcp(gw, { Authorization: `Bearer ${token}` });
      assert.equal(res.status, 401, `token ${token}`);
      const body = await jsonBody(res);
      assert.equal(body?.error?.code, 'token_invalid', JSON.stringify(body));
    }
  });

  it('POST /pair with a wrong code is 403; a real code pairs and its token opens /mcp', async () => {
    const code = await pairingCode(gw);
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, '0');
    const refused = await postPair(gw, { code: wrong, name: 'switchboard-e2e-wrong-code' });
    assert.equal(refused.status, 403);
    await refused.arrayBuffer();

    const ok = await postPair(gw, { code, name: 'switchboard-e2e-raw' });
    assert.equal(ok.status, 200);
    const body = await jsonBody(ok);
    assert.equal(body.paired, true);
    assert.match(body.token, /^sb_[0-9a-f]{64}$/);
    assert.equal(typeof body.name, 'string');
    assert.equal(body.role, 'default');
    assert.equal(typeof body.client_config, 'object');

    // The code is single-use.
    const again = await postPair(gw, { code, name: 'switchboard-e2e-reused-code' });
    assert.equal(again.status, 403);
    await again.arrayBuffer();

    const res = await postMcp(gw, { Authorization: `Bearer ${body.token}` });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const sessionId = res.headers.get('mcp-session-id');
    if (sessionId) {
      const del = await fetch(gw.mcpUrl, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${body.token}`, 'Mcp-Session-Id': sessionId },
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      await del.arrayBuffer();
    }
  });

  it('a reader client lists only its allowed tools and is refused the others', async () => {
    const { client, paired } = await connect('switchboard-e2e-ts-reader', { role: 'reader' });
    assert.equal(paired.role, 'reader');

    const names = (await listAllTools(client)).map((t) => t.name).sort();
    assert.deepEqual(names, ['fixture__echo', 'switchboard__health_snapshot']);

    const err = await callError(client, 'fixture__add', { a: 2, b: 3 });
    assert.ok(
      String(err?.message).includes("tool 'fixture__add' is not allowed for role 'reader'"),
      `error message: ${err?.message}`,
    );
    assert.equal(err?.code, -32003, `error code of ${err?.message}`);

    const echo = await call(client, 'fixture__echo', { text: 'reader may echo' });
    assert.notEqual(echo.isError, true);
    assert.equal(textOf(echo), 'reader may echo');

    const health = await call(client, 'switchboard__health_snapshot', {});
    assert.notEqual(health.isError, true, textOf(health));
  });

  it('a locked client lists no tools and may call none', async () => {
    const { client, paired } = await connect('switchboard-e2e-ts-locked', { role: 'locked' });
    assert.equal(paired.role, 'locked');
    const tools = await listAllTools(client);
    assert.deepEqual(tools.map((t) => t.name), []);

    const err = await callError(client, 'fixture__echo', { text: 'no' });
    assert.ok(
      String(err?.message).includes("tool 'fixture__echo' is not allowed for role 'locked'"),
      `error message: ${err?.message}`,
    );
  });

  it('a default client still sees and calls every tool', async () => {
    const { client, paired } = await connect('switchboard-e2e-ts-default');
    assert.equal(paired.role, 'default');
    const names = (await listAllTools(client)).map((t) => t.name);
    for (const name of ALL_FIXTURE_TOOLS) assert.ok(names.includes(name), `${name} in ${names}`);
    const res = await call(client, 'fixture__add', { a: 2, b: 3 });
    assert.notEqual(res.isError, true);
    assert.equal(textOf(res), '5');
  });

  it('after `switchboard unpair`, that client fails with 401 while another keeps working', async () => {
    const revoked = await connect('switchboard-e2e-ts-revoked');
    const other = await connect('switchboard-e2e-ts-survivor');
    for (const { client } of [revoked, other]) {
      const res = await call(client, 'fixture__echo', { text: 'before' });
      assert.equal(textOf(res), 'before');
    }

    await unpair(gw, revoked.paired.name);

    let outcome;
    try {
      outcome = { result: await call(revoked.client, 'fixture__echo', { text: 'after' }) };
    } catch (error) {
      outcome = { error };
    }
    assert.ok(outcome.error, `the revoked client's call should fail, got ${JSON.stringify(outcome.result)}`);
    // The SDK surfaces the HTTP status as StreamableHTTPError.code, with the body in the message.
    assert.ok(
      outcome.error.code === 401 || /\b401\b|token_invalid/.test(String(outcome.error.message)),
      `expected a 401 error, got code ${outcome.error.code}: ${outcome.error.message}`,
    );

    // The same token on a fresh request: 401 token_invalid.
    const raw = await postMcp(gw, { Authorization: `Bearer ${revoked.token}` });
    assert.equal(raw.status, 401);
    assert.equal((await jsonBody(raw))?.error?.code, 'token_invalid');

    const res = await call(other.client, 'fixture__echo', { text: 'still paired' });
    assert.notEqual(res.isError, true);
    assert.equal(textOf(res), 'still paired');
  });

  it('`switchboard unpair` ends the client\'s open GET /mcp stream', async () => {
    const paired = await pair(gw, 'switchboard-e2e-ts-stream');
    const auth = { Authorization: `Bearer ${paired.token}` };
    const init = await postMcp(gw, auth);
    const initText = await init.text();
    assert.equal(init.status, 200, initText);
    const sessionId = init.headers.get('mcp-session-id');
    assert.ok(sessionId, 'a 2025-11-25 initialize opens a session');
    const session = { ...auth, 'Mcp-Session-Id': sessionId, 'MCP-Protocol-Version': '2025-11-25' };
    const initialized = await fetch(gw.mcpUrl, {
      method: 'POST',
      headers: { ...session, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    await initialized.arrayBuffer();
    assert.equal(initialized.status, 202);

    const abort = new AbortController();
    try {
      const stream = await fetch(gw.mcpUrl, {
        method: 'GET',
        headers: { ...session, Accept: 'text/event-stream' },
        signal: AbortSignal.any([abort.signal, AbortSignal.timeout(20_000)]),
      });
      assert.equal(stream.status, 200);
      const reader = stream.body.getReader();
      const ended = (async () => {
        for (;;) {
          const { done } = await reader.read();
          if (done) return 'ended';
        }
      })().catch((err) => `errored: ${err.message}`);
      const early = await Promise.race([ended, sleep(300).then(() => 'open')]);
      assert.equal(early, 'open', 'the GET stream stays open while the client is paired');

      await unpair(gw, paired.name);
      const outcome = await Promise.race([ended, sleep(5_000).then(() => 'still open after 5 s')]);
      assert.notEqual(outcome, 'still open after 5 s', 'unpair should close the client\'s stream');
    } finally {
      abort.abort();
    }
  });
});
