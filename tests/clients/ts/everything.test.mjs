// End-to-end: every feature of @modelcontextprotocol/server-everything through the gateway gives
// what the same official TypeScript SDK client gets from the server directly: every tool (called
// with arguments that exercise it), resource, resource template, prompt and completion, with
// sampling, elicitation and roots answered by the client's own handlers, progress, logging and
// subscriptions. The server sits behind the gateway twice: as a stdio child (`everything`) and as
// a Streamable HTTP remote (`remote`, server-everything's `streamableHttp` mode); directly, the
// client runs it over stdio and talks to the same HTTP server. Results must be equal after
// `normalize`, which evens out only what is documented there.
// Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

import {
  connectClient,
  connectHttp,
  connectStdio,
  everythingServer,
  listAllTools,
  REQUEST_TIMEOUT_MS,
  sleep,
  startEverythingHttp,
  startGateway,
  waitForTools,
  sortEmbeddedJson,
} from './gateway.mjs';

const CAPABILITIES = { elicitation: { form: {}, url: {} }, sampling: {}, roots: { listChanged: true } };
const ROOTS = [{ uri: 'file:///tmp/switchboard-e2e/everything', name: 'Everything' }];

/** A client's handlers: sampling, elicitation and roots answered the same way every time. */
function handlers() {
  const state = { logs: [], updates: [] };
  state.setup = (client) => {
    client.setRequestHandler(ElicitRequestSchema, async (req) =>
      req.params.mode === 'url'
        ? { action: 'accept' }
        : { action: 'accept', content: { name: 'Ada', check: true, email: 'ada@example.com', integer: 7, number: 2.5 } },
    );
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
      model: 'switchboard-e2e-model',
      role: 'assistant',
      stopReason: 'endTurn',
      content: { type: 'text', text: `sampled ${JSON.stringify(req.params.messages)}` },
    }));
    client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: ROOTS }));
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => state.logs.push(n.params));
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => state.updates.push(n.params));
  };
  return state;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const ISO_TIME = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g;


/**
 * What may differ between a direct run and one through the gateway, made equal, and nothing
 * else: random ids (UUIDs) and clock times (ISO timestamps) server-everything makes per call;
 * the key order of JSON the server prints of what the client answered it (the client's answer
 * reaches the server as the same JSON, read and written again by the gateway's MCP library, and
 * JSON objects have no order); the progress token that library (rmcp) puts into the `_meta` of
 * every request it sends a client; and the tool/prompt prefix (also where the SDK client names
 * the tool in an error of its own). Where one feature differs by
 * nature, its test says so (get-env's environment, which is another process's for the stdio
 * server).
 */
function normalize(value, prefix = '') {
  const walk = (v) => {
    if (typeof v === 'string') return sortEmbeddedJson(prefix ? v.replaceAll(prefix, '') : v);
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
  return JSON.parse(JSON.stringify(walk(value ?? null)).replace(UUID, '<uuid>').replace(ISO_TIME, '<time>'));
}

/** Every page of `list` (e.g. 'listResources') under `field`. */
async function listAll(client, list, field) {
  const items = [];
  let cursor;
  for (let page = 0; page < 100; page++) {
    const res = await client[list](cursor ? { cursor } : {}, { timeout: REQUEST_TIMEOUT_MS });
    items.push(...res[field]);
    cursor = res.nextCursor;
    if (!cursor) return items;
  }
  throw new Error(`${list}: more than 100 pages`);
}

/** `fn()`'s result, or its error as data (code, message, data), for comparing. */
async function outcome(fn) {
  try {
    return { result: await fn() };
  } catch (err) {
    return { error: { code: err.code, message: err.message, data: err.data } };
  }
}

/** Arguments for every server-everything tool: each one is called with these. */
const TOOL_ARGS = {
  echo: { message: 'through the gateway' },
  'get-annotated-message': { messageType: 'success', includeImage: true },
  'get-env': {},
  'get-resource-links': { count: 4 },
  'get-resource-reference': { resourceType: 'Blob', resourceId: 3 },
  'get-roots-list': {},
  'get-structured-content': { location: 'Chicago' },
  'get-sum': { a: 2.5, b: 40 },
  'get-tiny-image': {},
  'gzip-file-as-resource': { name: 'hello.txt.gz', data: 'data:text/plain;base64,aGVsbG8gZ2F0ZXdheQ==', outputType: 'resource' },
  'toggle-simulated-logging': {},
  'toggle-subscriber-updates': {},
  'trigger-long-running-operation': { duration: 0.3, steps: 3 },
  'trigger-elicitation-request': {},
  'trigger-url-elicitation': { url: 'https://example.com/switchboard-e2e', elicitationId: 'e2e-1' },
  'trigger-sampling-request': { prompt: 'hello', maxTokens: 10 },
  'simulate-research-query': { topic: 'gateways' },
  'trigger-sampling-request-async': { prompt: 'hello', maxTokens: 10 },
  'trigger-elicitation-request-async': {},
};
/** Tools whose second call undoes the first (a toggle): called twice, both results compared. */
const TOGGLES = new Set(['toggle-simulated-logging', 'toggle-subscriber-updates']);

/** Prompt arguments for every server-everything prompt. */
const PROMPT_ARGS = {
  'simple-prompt': {},
  'args-prompt': { city: 'Lisbon', state: 'Lisboa' },
  'completable-prompt': { department: 'Engineering', name: 'Alice' },
  'resource-prompt': { resourceType: 'Text', resourceId: '2' },
};

for (const mode of ['stdio', 'http']) {
  describe(`server-everything (${mode}) through the gateway and directly`, { timeout: 300_000 }, () => {
    let remote;
    let gw;
    let via;
    let direct;
    const viaState = handlers();
    const directState = handlers();
    const prefix = mode === 'stdio' ? 'everything__' : 'remote__';

    before(async () => {
      remote = await startEverythingHttp();
      const server = mode === 'stdio' ? everythingServer() : { name: 'remote', url: remote.url };
      gw = await startGateway([server]);
      try {
        via = await connectClient(gw, `e2e-everything-${mode}`, { capabilities: CAPABILITIES, setup: viaState.setup });
        await waitForTools(via.client, [`${prefix}echo`, `${prefix}trigger-sampling-request`]);
        direct =
          mode === 'stdio'
            ? await connectStdio(everythingServer(), `e2e-everything-${mode}`, { capabilities: CAPABILITIES, setup: directState.setup })
            : await connectHttp(remote.url, `e2e-everything-${mode}`, { capabilities: CAPABILITIES, setup: directState.setup });
        // server-everything registers its client-dependent tools once it knows the client
        await waitForTools(direct.client, ['trigger-sampling-request']);
      } catch (err) {
        console.error(`--- gateway stderr ---\n${gw?.logs()}--- end ---`);
        throw err;
      }
    }, { timeout: 60_000 });

    after(async () => {
      await via?.close();
      await direct?.close();
      await gw?.stop();
      await remote?.stop();
    }, { timeout: 30_000 });

    const it = (name, fn) =>
      test(name, { timeout: 90_000 }, async () => {
        try {
          await fn();
        } catch (err) {
          console.error(`--- gateway stderr (${mode}) ---\n${gw?.logs().slice(-20_000)}--- end ---`);
          throw err;
        }
      });

    it('lists the same tools, every field (execution, annotations, schemas) included', async () => {
      const through = (await listAllTools(via.client)).filter((t) => t.name.startsWith(prefix));
      const plain = await listAllTools(direct.client);
      const byName = (a, b) => a.name.localeCompare(b.name);
      assert.ok(plain.length >= Object.keys(TOOL_ARGS).length - 2, `listed directly: ${plain.map((t) => t.name)}`);
      assert.ok(plain.some((t) => t.execution), 'server-everything lists a tool with execution');
      assert.deepEqual(normalize(through.sort(byName), prefix), normalize(plain.sort(byName)));
    });

    it('calls every tool with the same result (content, structuredContent, errors)', async () => {
      const plain = await listAllTools(direct.client);
      for (const tool of plain) {
        const args = TOOL_ARGS[tool.name];
        assert.ok(args, `no arguments for server-everything's tool ${tool.name}: add it to TOOL_ARGS`);
        const times = TOGGLES.has(tool.name) ? 2 : 1;
        for (let i = 0; i < times; i++) {
          const call = (client, name) =>
            outcome(() => client.callTool({ name, arguments: args }, undefined, { timeout: REQUEST_TIMEOUT_MS }));
          const mine = await call(direct.client, tool.name);
          const theirs = await call(via.client, prefix + tool.name);
          if (tool.name === 'get-env' && mode === 'stdio') {
            // another process's environment (the gateway's child): only its shape can agree
            assert.equal(theirs.result?.content?.[0]?.type, 'text', JSON.stringify(theirs));
            assert.deepEqual(Object.keys(theirs.result), Object.keys(mine.result));
            continue;
          }
          assert.deepEqual(normalize(theirs, prefix), normalize(mine), `${tool.name} (call ${i + 1})`);
        }
      }
    });

    it('reports progress the same way', async () => {
      const run = async (client, name) => {
        const progress = [];
        const result = await client.callTool({ name, arguments: { duration: 0.3, steps: 3 } }, undefined, {
          timeout: REQUEST_TIMEOUT_MS,
          onprogress: (p) => progress.push(p),
        });
        return { result, progress };
      };
      const mine = await run(direct.client, 'trigger-long-running-operation');
      const theirs = await run(via.client, `${prefix}trigger-long-running-operation`);
      assert.deepEqual(normalize(theirs.result), normalize(mine.result));
      // server-everything sends its last report just before the result, and the SDK client
      // drops reports that come after it: directly too, the last one is sometimes missing
      for (const { progress } of [mine, theirs]) {
        assert.ok(progress.length >= 2, JSON.stringify(progress));
        progress.forEach((p, i) => assert.deepEqual(p, { progress: i + 1, total: 3 }));
      }
    });

    it('lists and reads the same resources and templates', async () => {
      const resources = await listAll(direct.client, 'listResources', 'resources');
      const through = await listAll(via.client, 'listResources', 'resources');
      assert.ok(resources.length > 0);
      for (const r of resources) {
        assert.deepEqual(
          normalize(through.find((t) => t.uri === r.uri)),
          normalize(r),
          `resources/list: ${r.uri}`,
        );
        const mine = await outcome(() => direct.client.readResource({ uri: r.uri }, { timeout: REQUEST_TIMEOUT_MS }));
        const theirs = await outcome(() => via.client.readResource({ uri: r.uri }, { timeout: REQUEST_TIMEOUT_MS }));
        assert.deepEqual(normalize(theirs), normalize(mine), `resources/read ${r.uri}`);
      }
      const templates = await listAll(direct.client, 'listResourceTemplates', 'resourceTemplates');
      const viaTemplates = await listAll(via.client, 'listResourceTemplates', 'resourceTemplates');
      assert.ok(templates.length > 0);
      assert.deepEqual(normalize(viaTemplates), normalize(templates));
      for (const t of templates) {
        const uri = t.uriTemplate.replace(/\{[^}]+\}/g, '2');
        const mine = await outcome(() => direct.client.readResource({ uri }, { timeout: REQUEST_TIMEOUT_MS }));
        const theirs = await outcome(() => via.client.readResource({ uri }, { timeout: REQUEST_TIMEOUT_MS }));
        assert.ok(mine.result, `${uri}: ${JSON.stringify(mine)}`);
        assert.deepEqual(normalize(theirs), normalize(mine), `resources/read ${uri}`);
      }
    });

    it('lists and gets the same prompts', async () => {
      const prompts = await listAll(direct.client, 'listPrompts', 'prompts');
      const through = (await listAll(via.client, 'listPrompts', 'prompts')).filter((p) => p.name.startsWith(prefix));
      const byName = (a, b) => a.name.localeCompare(b.name);
      assert.deepEqual(normalize(through.sort(byName), prefix), normalize(prompts.sort(byName)));
      for (const p of prompts) {
        const args = PROMPT_ARGS[p.name];
        assert.ok(args, `no arguments for server-everything's prompt ${p.name}: add it to PROMPT_ARGS`);
        const mine = await outcome(() => direct.client.getPrompt({ name: p.name, arguments: args }, { timeout: REQUEST_TIMEOUT_MS }));
        const theirs = await outcome(() =>
          via.client.getPrompt({ name: prefix + p.name, arguments: args }, { timeout: REQUEST_TIMEOUT_MS }),
        );
        assert.ok(mine.result, `${p.name}: ${JSON.stringify(mine)}`);
        assert.deepEqual(normalize(theirs), normalize(mine), `prompts/get ${p.name}`);
      }
    });

    it('completes prompt and template arguments the same way', async () => {
      const templates = await listAll(direct.client, 'listResourceTemplates', 'resourceTemplates');
      const cases = [
        [{ type: 'ref/prompt', name: 'completable-prompt' }, { name: 'department', value: 'S' }, undefined],
        [{ type: 'ref/prompt', name: 'completable-prompt' }, { name: 'name', value: '' }, { arguments: { department: 'Sales' } }],
        [{ type: 'ref/prompt', name: 'resource-prompt' }, { name: 'resourceType', value: 'T' }, undefined],
        ...templates.map((t) => [{ type: 'ref/resource', uri: t.uriTemplate }, { name: 'resourceId', value: '1' }, undefined]),
      ];
      for (const [ref, argument, context] of cases) {
        const ask = (client, r) =>
          outcome(() => client.complete({ ref: r, argument, ...(context ? { context } : {}) }, { timeout: REQUEST_TIMEOUT_MS }));
        const mine = await ask(direct.client, ref);
        const theirs = await ask(via.client, ref.type === 'ref/prompt' ? { ...ref, name: prefix + ref.name } : ref);
        assert.ok(mine.result, `${JSON.stringify(ref)}: ${JSON.stringify(mine)}`);
        assert.deepEqual(normalize(theirs), normalize(mine), `completion/complete ${JSON.stringify(ref)} ${argument.name}`);
      }
      assert.ok((await ask0(direct.client)).completion.values.includes('Sales'));
    });

    it('logs at the level the client set, and sends updates of subscribed resources', async () => {
      const uri = 'demo://resource/dynamic/text/1';
      for (const [client, state, p] of [
        [direct.client, directState, ''],
        [via.client, viaState, prefix],
      ]) {
        state.logs.length = 0;
        state.updates.length = 0;
        await client.setLoggingLevel('debug', { timeout: REQUEST_TIMEOUT_MS });
        await client.subscribeResource({ uri }, { timeout: REQUEST_TIMEOUT_MS });
        await client.callTool({ name: `${p}toggle-simulated-logging`, arguments: {} });
        await client.callTool({ name: `${p}toggle-subscriber-updates`, arguments: {} });
        const deadline = Date.now() + 20_000;
        while ((state.logs.length === 0 || state.updates.length === 0) && Date.now() < deadline) await sleep(100);
        await client.callTool({ name: `${p}toggle-simulated-logging`, arguments: {} });
        await client.callTool({ name: `${p}toggle-subscriber-updates`, arguments: {} });
        await client.unsubscribeResource({ uri }, { timeout: REQUEST_TIMEOUT_MS });
      }
      for (const state of [directState, viaState]) {
        assert.ok(state.logs.length > 0, 'a log message arrived');
        assert.ok(state.updates.length > 0, 'a resource update arrived');
        assert.deepEqual(state.updates[0], { uri });
      }
      // the same messages, but on the gateway the logger names the server
      const server = mode === 'stdio' ? 'everything' : 'remote';
      const shape = ({ level, data }) => ({ level: typeof level, data: typeof data });
      assert.deepEqual(viaState.logs.map(shape).slice(0, 1), directState.logs.map(shape).slice(0, 1));
      for (const log of viaState.logs) {
        assert.ok(log.logger === server || log.logger?.startsWith(`${server}/`), JSON.stringify(log));
      }
    });

    it('answers ping', async () => {
      assert.deepEqual(await via.client.ping({ timeout: REQUEST_TIMEOUT_MS }), await direct.client.ping());
    });
  });
}

/** A completion the reference itself must make (so that two equally broken runs cannot agree). */
const ask0 = (client) =>
  client.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'S' } });
