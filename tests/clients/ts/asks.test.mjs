// End-to-end: server-to-client requests (elicitation, sampling, roots) through the gateway, with
// real parts only: the official TypeScript SDK client, declaring those capabilities and answering
// them with its own request handlers, and @modelcontextprotocol/server-everything behind the
// gateway as a stdio server. Every scenario runs through each of the gateway's endpoints (the
// aggregated /mcp, the server's own /mcp/everything on Streamable HTTP and /ws/everything on the
// SDK's WebSocket transport) and with the same client on server-everything directly over stdio,
// and they must agree: the tool's result, and what the client was asked. So must the server's
// tools, prompts, resources and completions as each endpoint lists and answers them.
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

import {
  apiToken,
  connectClient,
  connectStdio,
  connectWsClient,
  everythingServer,
  listAllTools,
  REQUEST_TIMEOUT_MS,
  sleep,
  startGateway,
  textOf,
  upstreamStderr,
  waitForTools,
  sortEmbeddedJson,
} from './gateway.mjs';

/** What the client declares: everything the gateway declares upstream. */
const CAPABILITIES = { elicitation: { form: {}, url: {} }, sampling: {}, roots: { listChanged: true } };

/** The roots the client gives, always (server-everything may ask for them before any call). */
const ROOTS = [
  { uri: 'file:///tmp/switchboard-e2e/project-a', name: 'Project A' },
  { uri: 'file:///tmp/switchboard-e2e/project-b' },
];

/** The server-everything tools that ask the client something (registered only for a client that can be asked). */
const ASKING_TOOLS = ['trigger-sampling-request', 'trigger-elicitation-request', 'trigger-url-elicitation', 'get-roots-list'];

const PREFIX = 'everything__';

/**
 * A client that records every request the server sends it (`asks`) and answers with whatever
 * the running scenario says (`answers.elicit`, `answers.sample`; roots are always ROOTS).
 */
function asking() {
  const state = { asks: [], answers: {} };
  const record = (req) => state.asks.push({ method: req.method, params: req.params });
  state.setup = (client) => {
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      record(req);
      assert.ok(state.answers.elicit, `unexpected elicitation/create: ${JSON.stringify(req.params)}`);
      return state.answers.elicit(req.params);
    });
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      record(req);
      assert.ok(state.answers.sample, `unexpected sampling/createMessage: ${JSON.stringify(req.params)}`);
      return state.answers.sample(req.params);
    });
    client.setRequestHandler(ListRootsRequestSchema, async (req) => {
      record(req);
      return { roots: ROOTS };
    });
  };
  return state;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;


/**
 * What may differ between the two runs, made equal: random ids server-everything makes per call,
 * the key order of JSON the server prints, and the progress token the gateway's MCP library puts
 * on every request it sends (rmcp's Peer::send_request; the server sent none).
 */
function normalize(value) {
  const walk = (v) => {
    if (typeof v === 'string') return sortEmbeddedJson(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') {
      const out = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === '_meta' && x && typeof x === 'object') {
          const { progressToken, ...rest } = x;
          if (Object.keys(rest).length) out[k] = walk(rest);
        } else {
          out[k] = walk(x);
        }
      }
      return out;
    }
    return v;
  };
  return JSON.parse(JSON.stringify(walk(value ?? null)).replace(UUID, '<uuid>'));
}

/**
 * Each scenario: the tool (without the gateway's prefix), its arguments, how the client answers,
 * and what the result must show (so that two equally broken runs cannot agree).
 */
const SCENARIOS = [
  {
    name: 'sampling/createMessage (trigger-sampling-request)',
    tool: 'trigger-sampling-request',
    args: { prompt: 'Say hi to the gateway', maxTokens: 42 },
    answers: {
      sample: (params) => ({
        model: 'switchboard-e2e-model',
        role: 'assistant',
        stopReason: 'endTurn',
        content: { type: 'text', text: `sampled <${params.messages[0].content.text}> in ${params.maxTokens}` },
      }),
    },
    asked: ['sampling/createMessage'],
    check: (r) => {
      assert.match(textOf(r.result), /sampled <Resource trigger-sampling-request context: Say hi to the gateway> in 42/);
      assert.match(textOf(r.result), /switchboard-e2e-model/);
    },
  },
  {
    name: 'elicitation/create, form, accepted (trigger-elicitation-request)',
    tool: 'trigger-elicitation-request',
    args: {},
    answers: {
      elicit: () => ({
        action: 'accept',
        content: { name: 'Ada Lovelace', check: true, email: 'ada@example.com', integer: 7, number: 2.5 },
      }),
    },
    asked: ['elicitation/create'],
    check: (r) => {
      const text = textOf(r.result);
      assert.match(text, /User provided the requested information/);
      assert.match(text, /- Name: Ada Lovelace/);
      assert.match(text, /- Agreed to terms: true/);
      assert.match(text, /- Email: ada@example.com/);
      assert.match(text, /- Favorite Integer: 7/);
      assert.equal(r.asks[0].params.requestedSchema.required[0], 'name');
    },
  },
  {
    name: 'elicitation/create, form, declined',
    tool: 'trigger-elicitation-request',
    args: {},
    answers: { elicit: () => ({ action: 'decline' }) },
    asked: ['elicitation/create'],
    check: (r) => assert.match(textOf(r.result), /User declined to provide the requested information/),
  },
  {
    name: 'elicitation/create, form, cancelled',
    tool: 'trigger-elicitation-request',
    args: {},
    answers: { elicit: () => ({ action: 'cancel' }) },
    asked: ['elicitation/create'],
    check: (r) => assert.match(textOf(r.result), /User cancelled the elicitation dialog/),
  },
  {
    name: 'elicitation/create, url mode, accepted (trigger-url-elicitation)',
    tool: 'trigger-url-elicitation',
    args: { url: 'https://example.com/switchboard-e2e/authorize', elicitationId: 'switchboard-e2e-url-1' },
    answers: { elicit: () => ({ action: 'accept' }) },
    asked: ['elicitation/create'],
    check: (r) => {
      assert.equal(r.asks[0].params.mode, 'url');
      assert.equal(r.asks[0].params.url, 'https://example.com/switchboard-e2e/authorize');
      assert.match(textOf(r.result), /User completed the URL elicitation flow[\s\S]*switchboard-e2e-url-1/);
    },
  },
  {
    name: 'url elicitation by error (-32042), then the retry asks',
    tool: 'trigger-url-elicitation',
    args: { url: 'https://example.com/switchboard-e2e/error-path', elicitationId: 'switchboard-e2e-url-2', errorPath: true },
    answers: { elicit: () => ({ action: 'decline' }) },
    calls: 2, // the first fails with -32042; the same call again goes the request path
    asked: ['elicitation/create'],
    check: (r) => {
      const [first, second] = r.calls;
      assert.equal(first.error?.code, -32042, `first call: ${JSON.stringify(first)}`);
      assert.equal(first.error.data?.elicitations?.[0]?.mode, 'url');
      assert.match(textOf(second.result), /User declined to open the URL \(Elicitation ID: switchboard-e2e-url-2\)/);
    },
  },
  {
    name: 'roots/list (get-roots-list)',
    tool: 'get-roots-list',
    args: {},
    answers: {},
    // Directly, server-everything fetched the roots right after initialization and answers from
    // its cache; through the gateway that early roots/list had no call to go with, so it asks
    // during the call. What the client is asked is not compared; the answer is.
    asked: null,
    askedThroughGateway: ['roots/list'],
    check: (r) => {
      const text = textOf(r.result);
      assert.match(text, /Current MCP Roots \(2 total\)/);
      assert.match(text, /1\. Project A\n {3}URI: file:\/\/\/tmp\/switchboard-e2e\/project-a/);
      assert.match(text, /2\. Unnamed Root\n {3}URI: file:\/\/\/tmp\/switchboard-e2e\/project-b/);
    },
  },
];

/** Calls the scenario's tool (`calls` times) on `conn`; resolves to {result | error, calls, asks}. */
async function runScenario(conn, state, prefix, scenario) {
  state.answers = scenario.answers;
  state.asks = [];
  const calls = [];
  for (let i = 0; i < (scenario.calls ?? 1); i++) {
    try {
      const result = await conn.client.callTool({ name: prefix + scenario.tool, arguments: scenario.args }, undefined, {
        timeout: REQUEST_TIMEOUT_MS,
      });
      calls.push({ result });
    } catch (err) {
      calls.push({ error: { code: err.code, message: err.message, data: err.data } });
    }
  }
  state.answers = {};
  return { ...calls.at(-1), calls, asks: state.asks };
}

/** Whether server-everything's early roots/list (no call in flight on the gateway) was refused and survived. */
const earlyRootsRefused = (tail) => (tail ?? []).some((l) => /Failed to request roots from client/.test(l));

/**
 * The gateway's endpoints the comparisons run through: how a client connects there and the
 * prefix server-everything's tool and prompt names carry (none on the server's own endpoints).
 */
const ROUTES = [
  { label: '/mcp', prefix: PREFIX, connect: (gw, opts) => connectClient(gw, 'switchboard-e2e-ts-asks', opts) },
  {
    label: '/mcp/everything',
    prefix: '',
    connect: (gw, opts) => connectClient(gw, 'switchboard-e2e-ts-asks-own', { ...opts, path: '/mcp/everything' }),
  },
  {
    label: '/ws/everything',
    prefix: '',
    connect: (gw, opts) => connectWsClient(gw, '/ws/everything', 'switchboard-e2e-ts-asks-ws', opts),
  },
];

/** Every item of a paginated list (`list(cursor)` → the page, `field` its items), bounded. */
async function listAll(list, field) {
  const items = [];
  let cursor;
  for (let pages = 0; pages < 100; pages++) {
    const page = await list(cursor);
    items.push(...page[field]);
    cursor = page.nextCursor;
    if (!cursor) return items;
  }
  throw new Error(`more than 100 pages of ${field}`);
}

describe('server-to-client requests via the TypeScript SDK: gateway against server-everything directly', { timeout: 300_000 }, () => {
  let gw;
  let viaGateway;
  let direct;
  const gwState = asking();
  const directState = asking();
  /** label → {conn, state} for every route, `/mcp` being viaGateway/gwState. */
  const routes = new Map();

  before(async () => {
    gw = await startGateway([everythingServer()]);
    try {
      viaGateway = await ROUTES[0].connect(gw, { capabilities: CAPABILITIES, setup: gwState.setup });
      await waitForTools(viaGateway.client, ASKING_TOOLS.map((t) => PREFIX + t));
      routes.set('/mcp', { conn: viaGateway, state: gwState });
      for (const route of ROUTES.slice(1)) {
        const state = asking();
        const conn = await route.connect(gw, { capabilities: CAPABILITIES, setup: state.setup });
        routes.set(route.label, { conn, state });
      }
      direct = await connectStdio(everythingServer(), 'switchboard-e2e-ts-asks', {
        capabilities: CAPABILITIES,
        setup: directState.setup,
      });
      // server-everything asks for the roots 350 ms after `notifications/initialized`: let the
      // direct client have answered that before the scenarios clear what it was asked.
      const deadline = Date.now() + 5_000;
      while (!directState.asks.some((a) => a.method === 'roots/list') && Date.now() < deadline) await sleep(50);
    } catch (err) {
      console.error(`--- gateway stderr ---\n${gw.logs()}--- end ---`);
      throw err;
    }
  }, { timeout: 60_000 });

  after(async () => {
    for (const { conn } of routes.values()) await conn.close();
    await direct?.close();
    const res = await gw?.stop();
    if (res?.forced) console.error('gateway did not exit within 5 s of SIGTERM; killed it');
  }, { timeout: 30_000 });

  const it = (name, fn) =>
    test(name, { timeout: 60_000 }, async () => {
      try {
        await fn();
      } catch (err) {
        console.error(`--- gateway stderr (${gw?.mcpUrl}) ---\n${gw?.logs()}--- end ---`);
        if (direct) console.error(`--- server-everything (direct) stderr ---\n${direct.stderr()}--- end ---`);
        throw err;
      }
    });

  // every field as the server listed it, `execution` (task support) included
  const byName = (a, b) => a.name.localeCompare(b.name);

  for (const route of ROUTES) {
    it(`lists the same server-everything tools, asking ones included, through ${route.label} and directly`, async () => {
      const { conn } = routes.get(route.label);
      const strip = (t) => ({ ...t, name: t.name.slice(route.prefix.length) });
      const listed = await listAllTools(conn.client);
      // on /mcp, among the gateway's own; on the server's own endpoints, exactly its tools
      const through = (route.prefix ? listed.filter((t) => t.name.startsWith(route.prefix)) : listed).map(strip);
      const plain = await listAllTools(direct.client);
      for (const tool of ASKING_TOOLS) assert.ok(plain.some((t) => t.name === tool), `${tool} listed directly`);
      assert.deepEqual(through.sort(byName), plain.sort(byName));
    });

    it(`prompts, resources, templates and completions are server-everything's through ${route.label}`, async () => {
      const { conn } = routes.get(route.label);
      const prompts = (c) => listAll((cursor) => c.listPrompts(cursor ? { cursor } : undefined), 'prompts');
      const resources = (c) => listAll((cursor) => c.listResources(cursor ? { cursor } : undefined), 'resources');
      const templates = (c) =>
        listAll((cursor) => c.listResourceTemplates(cursor ? { cursor } : undefined), 'resourceTemplates');
      const plainPrompts = await prompts(direct.client);
      assert.ok(plainPrompts.length > 0, 'server-everything has prompts');
      const throughPrompts = (await prompts(conn.client))
        .filter((p) => p.name.startsWith(route.prefix))
        .map((p) => ({ ...p, name: p.name.slice(route.prefix.length) }));
      assert.deepEqual(throughPrompts.sort(byName), [...plainPrompts].sort(byName));
      const byUri = (a, b) => a.uri.localeCompare(b.uri);
      const plainResources = await resources(direct.client);
      assert.ok(plainResources.length > 0, 'server-everything has resources');
      assert.deepEqual((await resources(conn.client)).sort(byUri), [...plainResources].sort(byUri));
      const byTemplate = (a, b) => a.uriTemplate.localeCompare(b.uriTemplate);
      assert.deepEqual((await templates(conn.client)).sort(byTemplate), (await templates(direct.client)).sort(byTemplate));

      // a prompt without required arguments, and the first resource, read both ways
      const simple = plainPrompts.find((p) => !(p.arguments ?? []).some((a) => a.required));
      if (simple) {
        const plain = await direct.client.getPrompt({ name: simple.name });
        const through = await conn.client.getPrompt({ name: route.prefix + simple.name });
        assert.deepEqual(normalize(through), normalize(plain), `prompt ${simple.name}`);
      }
      const first = [...plainResources].sort(byUri)[0];
      const plainRead = await direct.client.readResource({ uri: first.uri });
      const throughRead = await conn.client.readResource({ uri: first.uri });
      assert.deepEqual(normalize(throughRead), normalize(plainRead), `resource ${first.uri}`);

      // a completion of a prompt argument, routed by the prompt's name
      const withArgs = plainPrompts.find((p) => (p.arguments ?? []).length > 0);
      if (withArgs) {
        const ask = (c, name) =>
          c.complete({ ref: { type: 'ref/prompt', name }, argument: { name: withArgs.arguments[0].name, value: '' } });
        const plain = await ask(direct.client, withArgs.name).catch((e) => ({ error: e.code }));
        const through = await ask(conn.client, route.prefix + withArgs.name).catch((e) => ({ error: e.code }));
        assert.deepEqual(normalize(through), normalize(plain), `completion of ${withArgs.name}`);
      }
    });

    for (const scenario of SCENARIOS) {
      it(`${scenario.name} through ${route.label}`, async () => {
        const { conn, state } = routes.get(route.label);
        const plain = await runScenario(direct, directState, '', scenario);
        const through = await runScenario(conn, state, route.prefix, scenario);
        scenario.check(plain); // the reference itself shows what the scenario is about
        scenario.check(through);
        assert.deepEqual(normalize(through.calls), normalize(plain.calls), 'tool results, through the gateway and directly');
        if (scenario.asked) {
          assert.deepEqual(through.asks.map((a) => a.method), scenario.asked);
          assert.deepEqual(normalize(through.asks), normalize(plain.asks), 'what the client was asked');
        }
        // One server-everything serves every endpoint, and it keeps the roots it was given:
        // only the first route's call makes it ask (the answer is compared on every route).
        if (scenario.askedThroughGateway && route === ROUTES[0]) {
          assert.deepEqual(through.asks.map((a) => a.method), scenario.askedThroughGateway);
        }
      });
    }
  }

  it("server-everything's roots/list before any call is refused by the gateway, and the server copes", async () => {
    // The refusal is by design (no call in flight: no client to ask). The roots scenario above
    // shows the server then asks again inside the call; here, that it logged the refused one.
    const tail = await upstreamStderr(gw, 'everything');
    if (tail === undefined) {
      console.error('GET /api/servers has no stderr_tail for everything: the early refusal is not checked');
      return;
    }
    assert.ok(earlyRootsRefused(tail), `server-everything's stderr tail: ${JSON.stringify(tail)}`);
    assert.match(gw.logs(), /no client call is in flight on 'everything'/);
  });

  it('a client that declared none of it is not asked: Switchboard answers the elicitation, sampling fails, the session goes on', async () => {
    // Directly, server-everything would not even list these tools to such a client; through the
    // gateway they are listed (the gateway declares the capabilities upstream for every client).
    // Its elicitation waits for the person at Switchboard (GET/POST /api/elicitations), and its
    // sampling request is refused on the client's behalf.
    const plain = await connectClient(gw, 'switchboard-e2e-ts-asks-none');
    gwState.asks = [];
    try {
      const token = await apiToken(gw);
      const api = (path, init = {}) =>
        fetch(`${gw.url}${path}`, {
          ...init,
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      const call = plain.client.callTool({ name: PREFIX + 'trigger-elicitation-request', arguments: {} }, undefined, { timeout: REQUEST_TIMEOUT_MS });
      let pending = [];
      for (const t0 = Date.now(); pending.length === 0; await sleep(50)) {
        assert.ok(Date.now() - t0 < REQUEST_TIMEOUT_MS, 'the elicitation never reached Switchboard');
        pending = (await (await api('/api/elicitations')).json()).elicitations;
      }
      assert.equal(pending[0].server, 'everything');
      assert.equal(pending[0].mode, 'form');
      const posted = await api(`/api/elicitations/${pending[0].id}`, { method: 'POST', body: JSON.stringify({ action: 'decline' }) });
      assert.equal(posted.status, 200, await posted.text());
      assert.match(textOf(await call), /User declined to provide the requested information/);
      const asked = [];
      for (const tool of ['trigger-sampling-request']) {
        let outcome;
        try {
          outcome = { result: await plain.client.callTool({ name: PREFIX + tool, arguments: { prompt: 'x' } }, undefined, { timeout: REQUEST_TIMEOUT_MS }) };
        } catch (err) {
          outcome = { error: err };
        }
        asked.push(outcome);
        const text = outcome.error ? outcome.error.message : textOf(outcome.result);
        assert.ok(outcome.error || outcome.result.isError, `${tool} should fail: ${JSON.stringify(outcome.result)}`);
        assert.match(text, /cannot be asked/, `${tool}: ${text}`);
      }
      const echo = await plain.client.callTool({ name: `${PREFIX}echo`, arguments: { message: 'still here' } }, undefined, {
        timeout: REQUEST_TIMEOUT_MS,
      });
      assert.equal(textOf(echo), 'Echo: still here');
      assert.equal(gwState.asks.length, 0, 'the asking client was not asked on the other one\'s behalf');
    } finally {
      await plain.close();
    }
  });
});
