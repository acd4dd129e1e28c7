// End-to-end: the official TypeScript MCP SDK client (Streamable HTTP) against a real Switchboard
// gateway with two upstream stdio servers: switchboard-fixture and server-everything.
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  connectClient,
  isRunning,
  everythingServer,
  fixtureServer,
  REQUEST_TIMEOUT_MS,
  sleep,
  startGateway,
  textOf,
  upstreamStderr,
  waitForTools,
} from './gateway.mjs';

const EXPECTED_TOOLS = [
  'fixture__echo',
  'fixture__add',
  'fixture__slow',
  'fixture__fail',
  'everything__echo',
  'everything__get-sum',
  'switchboard__health_snapshot',
];

/** Runs `fn`; on failure prints the gateway's stderr so the cause is visible in the test output. */
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

describe('gateway via the TypeScript SDK (Streamable HTTP)', { timeout: 180_000 }, () => {
  let gw;
  let conn;
  let client;

  before(async () => {
    gw = await startGateway([fixtureServer(), everythingServer()]);
    await withGatewayLogs(gw, async () => {
      conn = await connectClient(gw);
      client = conn.client;
      await waitForTools(client, EXPECTED_TOOLS);
    });
  }, { timeout: 60_000 });

  after(async () => {
    await conn?.close();
    const res = await gw?.stop();
    if (res?.forced) console.error('gateway did not exit within 5 s of SIGTERM; killed it');
  }, { timeout: 30_000 });

  const it = (name, fn) => test(name, { timeout: 60_000 }, () => withGatewayLogs(gw, fn));

  it('lists the tools of both upstream servers and the built-in ones', async () => {
    const tools = await waitForTools(client, EXPECTED_TOOLS);
    const names = tools.map((t) => t.name);
    for (const name of EXPECTED_TOOLS) assert.ok(names.includes(name), `${name} in ${names}`);
    assert.ok(names.includes('switchboard__telemetry_snapshot'), `telemetry tool in ${names}`);
    const echo = tools.find((t) => t.name === 'fixture__echo');
    assert.equal(echo.inputSchema?.type, 'object');
    assert.ok(echo.inputSchema?.properties?.text, 'fixture__echo keeps its input schema');
  });

  it('calls fixture__echo', async () => {
    const res = await client.callTool(
      { name: 'fixture__echo', arguments: { text: 'hello through the gateway' } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    assert.notEqual(res.isError, true);
    assert.equal(textOf(res), 'hello through the gateway');
  });

  it('calls fixture__add', async () => {
    const res = await client.callTool(
      { name: 'fixture__add', arguments: { a: 2, b: 3 } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    assert.notEqual(res.isError, true);
    assert.equal(textOf(res), '5');
  });

  it('calls server-everything tools (echo, get-sum)', async () => {
    const echo = await client.callTool(
      { name: 'everything__echo', arguments: { message: 'hi everything' } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    assert.notEqual(echo.isError, true);
    assert.equal(textOf(echo), 'Echo: hi everything');

    const sum = await client.callTool(
      { name: 'everything__get-sum', arguments: { a: 20, b: 22 } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    assert.notEqual(sum.isError, true);
    assert.match(textOf(sum), /\b42\b/);
  });

  it('forwards progress notifications of fixture__slow', async () => {
    const progress = [];
    const res = await client.callTool(
      { name: 'fixture__slow', arguments: { steps: 5, step_ms: 50 } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS, onprogress: (p) => progress.push(p) },
    );
    assert.notEqual(res.isError, true);
    assert.equal(textOf(res), 'done after 5 steps');
    assert.equal(progress.length, 5, `progress notifications: ${JSON.stringify(progress)}`);
    for (let i = 0; i < progress.length; i++) {
      assert.equal(progress[i].total, 5);
      if (i > 0) assert.ok(progress[i].progress > progress[i - 1].progress, 'progress increases');
    }
    assert.deepEqual(
      progress.map((p) => p.progress),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      progress.map((p) => p.message),
      ['step 1 of 5', 'step 2 of 5', 'step 3 of 5', 'step 4 of 5', 'step 5 of 5'],
    );
  });

  it('cancels fixture__slow via an AbortSignal, then keeps working', async () => {
    const cancelLines = (tail) => (tail ?? []).filter((l) => /cancelled at step/.test(l)).length;
    const cancelledBefore = cancelLines(await upstreamStderr(gw, 'fixture'));
    const controller = new AbortController();
    const started = Date.now();
    const call = client.callTool(
      { name: 'fixture__slow', arguments: { steps: 50, step_ms: 100 } },
      undefined,
      { timeout: 30_000, signal: controller.signal },
    );
    // Record the outcome without leaving an unhandled rejection behind.
    const outcome = call.then(
      (result) => ({ result }),
      (error) => ({ error }),
    );
    await sleep(300);
    const abortedAt = Date.now();
    controller.abort(new Error('test aborts the slow call'));
    const settled = await Promise.race([outcome, sleep(2_000).then(() => 'still pending')]);
    assert.notEqual(settled, 'still pending', 'the aborted call did not settle within 2 s');
    assert.ok(settled.error, `aborted call should reject, got ${JSON.stringify(settled.result)}`);
    assert.ok(Date.now() - abortedAt < 2_000);
    assert.ok(Date.now() - started < 5_000, 'the call ended well before the 5 s it would run');

    // The cancellation reaches the upstream: the fixture logs "request N cancelled at step i" to
    // stderr, which the gateway keeps per server (GET /api/servers). Skipped if not exposed.
    let tail = await upstreamStderr(gw, 'fixture');
    if (tail === undefined) {
      console.error('GET /api/servers has no stderr_tail for fixture: upstream cancellation not checked');
    } else {
      const deadline = Date.now() + 3_000;
      while (cancelLines(tail) <= cancelledBefore && Date.now() < deadline) {
        await sleep(100);
        tail = (await upstreamStderr(gw, 'fixture')) ?? [];
      }
      assert.ok(
        cancelLines(tail) > cancelledBefore,
        `the upstream fixture never logged the cancellation; its stderr tail: ${JSON.stringify(tail)}`,
      );
    }

    const res = await client.callTool(
      { name: 'fixture__echo', arguments: { text: 'still alive' } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    assert.equal(textOf(res), 'still alive');
  });

  it('returns isError for fixture__fail', async () => {
    const res = await client.callTool(
      { name: 'fixture__fail', arguments: { message: 'planned failure' } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    assert.equal(res.isError, true);
    assert.match(textOf(res), /planned failure/);
  });

  it('fails a call to an unknown tool (fixture__nope)', async () => {
    let message;
    try {
      const res = await client.callTool(
        { name: 'fixture__nope', arguments: {} },
        undefined,
        { timeout: REQUEST_TIMEOUT_MS },
      );
      assert.equal(res.isError, true, `unknown tool should fail, got ${JSON.stringify(res)}`);
      message = textOf(res);
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      message = err.message; // a JSON-RPC error (McpError)
    }
    assert.match(message, /nope/, `the error names the tool: ${message}`);
  });
});

describe('gateway shutdown', () => {
  test('SIGTERM stops the gateway with exit code 0 and ends its upstream servers', { timeout: 60_000 }, async () => {
    const gw = await startGateway([fixtureServer()]);
    let conn;
    try {
      await withGatewayLogs(gw, async () => {
        conn = await connectClient(gw, 'switchboard-e2e-ts-shutdown');
        await waitForTools(conn.client, ['fixture__pid']);
        const res = await conn.client.callTool({ name: 'fixture__pid', arguments: {} }, undefined, {
          timeout: REQUEST_TIMEOUT_MS,
        });
        const upstreamPid = Number(textOf(res));
        assert.ok(Number.isInteger(upstreamPid) && upstreamPid > 0, `pid: ${textOf(res)}`);
        await conn.close();
        conn = undefined;

        const { code, signal, forced } = await gw.stop();
        assert.equal(forced, false, 'the gateway exits within 5 s of SIGTERM');
        assert.equal(signal, null);
        assert.equal(code, 0);

        // The upstream fixture must not outlive the gateway (allow it a moment to be reaped).
        const deadline = Date.now() + 3_000;
        let alive = true;
        while (alive && Date.now() < deadline) {
          alive = isRunning(upstreamPid);
          if (alive) await sleep(100);
        }
        if (alive) {
          try {
            process.kill(upstreamPid, 'SIGKILL');
          } catch {}
        }
        assert.equal(alive, false, `upstream fixture (pid ${upstreamPid}) still running after shutdown`);
      });
    } finally {
      await conn?.close();
      await gw.stop();
    }
  });
});
