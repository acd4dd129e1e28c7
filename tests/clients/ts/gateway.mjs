// Shared helpers for the TypeScript SDK end-to-end tests: start a Switchboard gateway as a child
// process on a fresh config, connect the official SDK's Streamable HTTP client to it, stop it.
// Every wait here is bounded, so a broken gateway fails a test instead of hanging it.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { WebSocketClientTransport } from '@modelcontextprotocol/sdk/client/websocket.js';

const here = dirname(fileURLToPath(import.meta.url));
const clientsDir = resolve(here, '..');

export const STARTUP_TIMEOUT_MS = 20_000;
export const TOOLS_TIMEOUT_MS = 15_000;
export const REQUEST_TIMEOUT_MS = 10_000;
export const STOP_TIMEOUT_MS = 5_000;

// Same default as scripts/test-clients; the binaries themselves normally come from the env.
const targetDir = () =>
  process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'switchboard', 'target');

// Every process these helpers start, until it has exited. Whatever ends this test process (a
// failed assertion, an uncaught error, the runner's timeout signal), none of them outlives it.
const liveChildren = new Set();
// Processes the SDK's StdioClientTransport started (it keeps its ChildProcess to itself), by pid.
const livePids = new Set();

function track(child) {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  return child;
}

function killLiveChildren() {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  livePids.clear();
}

process.on('exit', killLiveChildren);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killLiveChildren();
    process.kill(process.pid, sig); // the listener is gone: die of the signal as before
  });
}

function requiredEnv(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (!value) {
    throw new Error(`${name} is not set: run the tests through scripts/test-clients`);
  }
  return value;
}

export function gatewayBin() {
  return requiredEnv(
    'SWITCHBOARD_BIN',
    join(targetDir(), 'debug', 'switchboard'),
  );
}

export function fixtureBin() {
  return requiredEnv(
    'SWITCHBOARD_FIXTURE_BIN',
    join(targetDir(), 'debug', 'switchboard-fixture'),
  );
}

/**
 * @modelcontextprotocol/server-filesystem over stdio with no directories of its own: it serves
 * the directories its client gives as roots (and asks again when they change).
 */
export function filesystemServer(name = 'files', extra = {}) {
  return {
    name,
    command: process.execPath,
    args: [join(clientsDir, 'node_modules', '@modelcontextprotocol', 'server-filesystem', 'dist', 'index.js')],
    ...extra,
  };
}

/** The stdio entry point of @modelcontextprotocol/server-everything (`dist/index.js stdio`). */
export function everythingServer() {
  return {
    name: 'everything',
    command: process.execPath,
    args: [
      join(clientsDir, 'node_modules', '@modelcontextprotocol', 'server-everything', 'dist', 'index.js'),
      'stdio',
    ],
  };
}

/**
 * server-everything as a Streamable HTTP server of its own (`dist/index.js streamableHttp`, on a
 * free port given as PORT), for tests of remote servers. Resolves once it listens, to
 * {url, stop()}; `stop()` must be called.
 */
export async function startEverythingHttp() {
  const { createServer } = await import('node:net');
  const port = await new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port: p } = probe.address();
      probe.close(() => resolvePort(p));
    });
  });
  const [command, entry] = [everythingServer().command, everythingServer().args[0]];
  const child = track(
    spawn(command, [entry, 'streamableHttp'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PORT: String(port) },
    }),
  );
  let output = '';
  const listening = new Promise((resolveListen, reject) => {
    const watch = (chunk) => {
      output += chunk;
      if (/listening on port/.test(output)) resolveListen();
    };
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', watch);
    child.stderr.on('data', watch);
    child.once('exit', (code) => reject(new Error(`server-everything exited (${code}):\n${output}`)));
  });
  await withTimeout(listening, STARTUP_TIMEOUT_MS, 'server-everything streamableHttp to listen');
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await withTimeout(gone, STOP_TIMEOUT_MS, 'server-everything to exit').catch(() => child.kill('SIGKILL'));
    },
  };
}

/**
 * A connected SDK client for the MCP server at `url` (Streamable HTTP, no gateway between): the
 * reference for remote servers, with connectStdio's options and handle.
 */
export async function connectHttp(url, name = 'switchboard-e2e-ts-direct', { capabilities, setup } = {}) {
  const client = new Client({ name, version: '0.0.0' }, capabilities ? { capabilities } : undefined);
  setup?.(client);
  const transport = new StreamableHTTPClientTransport(new URL(url));
  const errors = [];
  client.onerror = (err) => errors.push(err);
  await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  return {
    client,
    transport,
    errors,
    stderr: () => '',
    async close() {
      await withTimeout(transport.terminateSession(), REQUEST_TIMEOUT_MS, 'DELETE').catch(() => {});
      await withTimeout(client.close(), REQUEST_TIMEOUT_MS, 'client.close()').catch(() => {});
    },
  };
}

export function fixtureServer(name = 'fixture', args = []) {
  return { name, command: fixtureBin(), args };
}

// TOML basic strings accept JSON's escapes (\" \\ \n \t \uXXXX), so JSON.stringify quotes them.
const tomlString = (s) => JSON.stringify(String(s));

/**
 * The roles every test gateway knows: `default` sees every tool, `reader` two of them, `locked`
 * none. Clients pair with the default role unless they ask for another.
 */
export const ROLES = {
  default: ['*'],
  reader: ['fixture__echo', 'switchboard__health_snapshot'],
  locked: [],
};

export function configToml(servers, { roles = ROLES, defaultRole = 'default' } = {}) {
  const blocks = servers.map((s) =>
    [
      '[[servers]]',
      `name = ${tomlString(s.name)}`,
      // a remote server ({name, url}) or a stdio one ({name, command, args})
      ...(s.url
        ? [`url = ${tomlString(s.url)}`]
        : [`command = ${tomlString(s.command)}`, `args = [${(s.args ?? []).map(tomlString).join(', ')}]`]),
      ...(s.sessions ? [`sessions = ${tomlString(s.sessions)}`] : []),
      '',
    ].join('\n'),
  );
  // Tokens live in memory: every test gateway starts with no paired clients.
  blocks.push(['[auth]', 'token_store = "memory"', `default_role = ${tomlString(defaultRole)}`, ''].join('\n'));
  blocks.push(
    [
      '[roles]',
      ...Object.entries(roles).map(([role, tools]) => `${role} = [${tools.map(tomlString).join(', ')}]`),
      '',
    ].join('\n'),
  );
  return blocks.join('\n');
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `switchboard serve` on 127.0.0.1:0 with the given upstream servers, in a fresh temp dir.
 * Resolves once the gateway printed its listening line; the returned handle's `stop()` must be
 * called (in an `after`/`finally`), and is safe to call more than once.
 */
export async function startGateway(servers, configOptions) {
  const dir = await mkdtemp(join(tmpdir(), 'switchboard-e2e-'));
  const configPath = join(dir, 'config.toml');
  const dataDir = join(dir, 'data');
  await writeFile(configPath, configToml(servers, configOptions));

  const child = track(
    spawn(
      gatewayBin(),
      ['serve', '--listen', '127.0.0.1:0', '--config', configPath, '--data-dir', dataDir],
      {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, SWITCHBOARD_LOG: process.env.SWITCHBOARD_LOG ?? 'info', NO_COLOR: '1' },
      },
    ),
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  // 'close' (not 'exit'): it comes after stdout and stderr are drained, so logs() is complete.
  const exited = new Promise((resolveExit) => {
    child.once('close', (code, signal) => resolveExit({ code, signal }));
  });
  const spawnError = new Promise((_, reject) => child.once('error', reject));
  spawnError.catch(() => {});

  const gw = {
    dir,
    configPath,
    dataDir,
    child,
    pid: child.pid,
    url: undefined,
    mcpUrl: undefined,
    exited,
    logs: () => stderr,
    stopped: undefined,
    apiToken: undefined,
    /** SIGTERM, then SIGKILL after STOP_TIMEOUT_MS; resolves to {code, signal, forced}. */
    stop() {
      if (!gw.stopped) {
        gw.stopped = (async () => {
          let forced = false;
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            const res = await Promise.race([exited, sleep(STOP_TIMEOUT_MS).then(() => null)]);
            if (res === null) {
              forced = true;
              child.kill('SIGKILL');
            }
          }
          const { code, signal } = await exited;
          await rm(dir, { recursive: true, force: true }).catch(() => {});
          return { code, signal, forced };
        })();
      }
      return gw.stopped;
    },
  };

  const lines = createInterface({ input: child.stdout });
  const firstLine = new Promise((resolveLine, reject) => {
    lines.once('line', resolveLine);
    lines.once('close', () =>
      exited.then(({ code, signal }) =>
        reject(new Error(`gateway exited (code ${code}, signal ${signal}) before printing its address`)),
      ),
    );
  });
  // Keep draining stdout so the gateway never blocks on a full pipe.
  child.stdout.resume();
  try {
    const line = await withTimeout(
      Promise.race([
        firstLine,
        spawnError,
        exited.then(({ code, signal }) => {
          throw new Error(`gateway exited (code ${code}, signal ${signal}) before it was listening`);
        }),
      ]),
      STARTUP_TIMEOUT_MS,
      'waiting for "Switchboard listening on http://..." on the gateway\'s stdout',
    );
    const m = /^Switchboard listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line.trim());
    if (!m) {
      throw new Error(`unexpected first stdout line from the gateway: ${JSON.stringify(line)}`);
    }
    gw.url = m[1];
    gw.mcpUrl = `${gw.url}/mcp`;
    return gw;
  } catch (err) {
    await gw.stop();
    err.message += `\n(${gatewayBin()} serve --config ${configPath})\n--- gateway stderr ---\n${stderr}`;
    throw err;
  }
}

/**
 * Runs `$SWITCHBOARD_BIN <args>` to completion (killed after `timeoutMs`); resolves to
 * {code, signal, stdout, stderr}. Never rejects for a non-zero exit: callers check `code`.
 */
export function runCli(args, timeoutMs = REQUEST_TIMEOUT_MS) {
  return new Promise((resolveRun, reject) => {
    const child = track(
      spawn(gatewayBin(), args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NO_COLOR: '1' },
      }),
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(
          new Error(`switchboard ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`),
        );
      } else {
        resolveRun({ code, signal, stdout, stderr });
      }
    });
  });
}

/** A one-time pairing code from `switchboard pair` (its last stdout line), for `role` if given. */
export async function pairingCode(gw, role) {
  const args = ['pair', '--data-dir', gw.dataDir, ...(role ? ['--role', role] : [])];
  const res = await runCli(args);
  const lines = res.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines.at(-1) ?? '';
  if (res.code !== 0 || !/^\d{6}$/.test(last)) {
    throw new Error(
      `switchboard ${args.join(' ')} exited ${res.code} (signal ${res.signal}) without a 6-digit code ` +
        `on its last stdout line\nstdout: ${res.stdout}\nstderr: ${res.stderr}`,
    );
  }
  return last;
}

/** POST /pair {code, name}; resolves to the Response (not checked). */
export function postPair(gw, body) {
  return fetch(`${gw.url}/pair`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
}

/**
 * Pairs a client for real: a code from `switchboard pair [--role role]`, traded at POST /pair.
 * Resolves to the /pair answer: {paired, token, name (made unique by the gateway), role, ...}.
 */
export async function pair(gw, name, role) {
  const code = await pairingCode(gw, role);
  const res = await postPair(gw, { code, name });
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`POST /pair answered ${res.status}: ${text}`);
  }
  const body = JSON.parse(text);
  if (body.paired !== true || !/^sb_[0-9a-f]{64}$/.test(body.token ?? '')) {
    throw new Error(`unexpected POST /pair answer: ${text}`);
  }
  return body;
}

/** `switchboard unpair <name>`: revokes the client's token and closes its sessions. */
export async function unpair(gw, name) {
  const args = ['unpair', name, '--data-dir', gw.dataDir];
  const res = await runCli(args);
  if (res.code !== 0) {
    throw new Error(`switchboard ${args.join(' ')} exited ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  }
  return res;
}

/** A token of the gateway's own (default role) for its HTTP API, paired on first use. */
export function apiToken(gw) {
  if (!gw.apiToken) {
    gw.apiToken = pair(gw, 'switchboard-e2e-api').then((p) => p.token);
    gw.apiToken.catch(() => {
      gw.apiToken = undefined; // let a later call try again
    });
  }
  return gw.apiToken;
}

/**
 * A connected SDK client for the gateway's /mcp endpoint, sending `Authorization: Bearer` on every
 * request. Pairs a new client (named `name`, with `role` or the default role) unless `token` is
 * given. The handle has `token` and `paired` (the /pair answer, whose `name` unpairs it).
 * `capabilities` are the client's own (what it declares in `initialize`); `setup(client)` runs
 * before it connects (to set its request handlers). `path`: another endpoint than /mcp (a
 * server's own, `/mcp/<server>`).
 */
export async function connectClient(gw, name = 'switchboard-e2e-ts', { role, token, capabilities, setup, path } = {}) {
  const paired = token ? undefined : await pair(gw, name, role);
  const bearer = token ?? paired.token;
  const client = new Client({ name, version: '0.0.0' }, capabilities ? { capabilities } : undefined);
  setup?.(client);
  const transport = new StreamableHTTPClientTransport(new URL(path ? `${gw.url}${path}` : gw.mcpUrl), {
    requestInit: { headers: { Authorization: `Bearer ${bearer}` } },
  });
  // Errors of the background GET stream (e.g. after the token is revoked) are expected in some
  // tests; keep them for diagnosis instead of letting them reach the console.
  const errors = [];
  client.onerror = (err) => errors.push(err);
  await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  return {
    client,
    transport,
    token: bearer,
    paired,
    errors,
    async close() {
      await withTimeout(transport.terminateSession(), REQUEST_TIMEOUT_MS, 'DELETE /mcp').catch(() => {});
      await withTimeout(client.close(), REQUEST_TIMEOUT_MS, 'client.close()').catch(() => {});
    },
  };
}

/**
 * A connected SDK client on MCP over WebSocket at `path` (`/ws`, `/ws/<server>`): the SDK's own
 * WebSocketClientTransport on the `ws` package (Node 20 has no global WebSocket), the token
 * offered the browser way, as a `bearer.<token>` subprotocol next to the SDK's `mcp`. Pairs a
 * new client unless `token` is given; `capabilities` and `setup` as for connectClient.
 */
export async function connectWsClient(gw, path, name = 'switchboard-e2e-ts-ws', { role, token, capabilities, setup } = {}) {
  const paired = token ? undefined : await pair(gw, name, role);
  const bearer = token ?? paired.token;
  const { default: WebSocket } = await import('ws');
  // `allowSynchronousEvents: false` delivers each message in its own task, as a browser's
  // WebSocket does (the SDK's transport expects it: see ws.test.mjs). The class is read when the
  // transport starts, so it is set just before, for this client's token.
  globalThis.WebSocket = class extends WebSocket {
    constructor(url, protocol) {
      super(url, [protocol, `bearer.${bearer}`], { allowSynchronousEvents: false });
    }
  };
  const transport = new WebSocketClientTransport(new URL(path, gw.url.replace('http://', 'ws://')));
  const client = new Client({ name, version: '0.0.0' }, capabilities ? { capabilities } : undefined);
  setup?.(client);
  const errors = [];
  client.onerror = (err) => errors.push(err);
  await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  return {
    client,
    transport,
    token: bearer,
    paired,
    errors,
    async close() {
      await withTimeout(client.close(), REQUEST_TIMEOUT_MS, 'client.close() (ws)').catch(() => {});
    },
  };
}

/**
 * A connected SDK client for `server` ({command, args}, e.g. everythingServer()) run directly
 * over stdio, no gateway between: the reference the gateway's behaviour is compared with. Takes
 * the same `capabilities` and `setup` as connectClient; `close()` ends the server.
 */
export async function connectStdio(server, name = 'switchboard-e2e-ts-direct', { capabilities, setup } = {}) {
  const client = new Client({ name, version: '0.0.0' }, capabilities ? { capabilities } : undefined);
  setup?.(client);
  const transport = new StdioClientTransport({ command: server.command, args: server.args ?? [], stderr: 'pipe' });
  let stderr = '';
  const errors = [];
  client.onerror = (err) => errors.push(err);
  const connected = client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  // The stream exists once the transport started the process (before the handshake is over).
  transport.stderr?.setEncoding('utf8');
  transport.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  let pid = transport.pid; // set as soon as connect() spawned the server
  if (pid) livePids.add(pid);
  try {
    await connected;
    pid = transport.pid;
    if (pid) livePids.add(pid);
  } catch (err) {
    await client.close().catch(() => {});
    err.message += `\n--- ${server.command} ${(server.args ?? []).join(' ')} stderr ---\n${stderr}`;
    throw err;
  }
  return {
    client,
    transport,
    errors,
    stderr: () => stderr,
    async close() {
      await withTimeout(client.close(), REQUEST_TIMEOUT_MS, 'client.close() (stdio)').catch(() => {});
      if (pid) livePids.delete(pid);
    },
  };
}

export async function listAllTools(client) {
  const tools = [];
  let cursor;
  for (let page = 0; page < 100; page++) {
    const res = await client.listTools(cursor ? { cursor } : {}, { timeout: REQUEST_TIMEOUT_MS });
    tools.push(...res.tools);
    cursor = res.nextCursor;
    if (!cursor) break;
  }
  return tools;
}

/**
 * Polls tools/list until every name in `expected` is listed (the gateway starts its upstream
 * servers in the background). Resolves to the full tool list; rejects after TOOLS_TIMEOUT_MS
 * naming what is missing.
 */
export async function waitForTools(client, expected, timeoutMs = TOOLS_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let seen = [];
  let lastError;
  for (;;) {
    try {
      const tools = await listAllTools(client);
      seen = tools.map((t) => t.name);
      lastError = undefined;
      if (expected.every((n) => seen.includes(n))) return tools;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(250);
  }
  const missing = expected.filter((n) => !seen.includes(n));
  throw new Error(
    `tools not listed after ${timeoutMs} ms: missing ${JSON.stringify(missing)}; ` +
      `listed ${JSON.stringify(seen)}` +
      (lastError ? `; last tools/list error: ${lastError.message}` : ''),
  );
}

export function textOf(result) {
  return (result.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('');
}

/** Whether `pid` is a live process (a zombie waiting to be reaped counts as ended). */
export function isRunning(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true; // no /proc (not Linux): trust kill(pid, 0)
  }
}

/**
 * The stderr tail the gateway keeps for upstream `server`, from its `GET /api/servers`; undefined
 * when the gateway does not expose one (the check that uses it is then skipped).
 */
export async function upstreamStderr(gw, server) {
  try {
    const token = await apiToken(gw);
    const res = await fetch(`${gw.url}/api/servers`, {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (!res.ok) return undefined;
    const body = await res.json();
    const tail = body?.servers?.find((s) => s.name === server)?.stderr_tail;
    return Array.isArray(tail) ? tail : undefined;
  } catch {
    return undefined;
  }
}

/** `value` with every object's keys in sorted order. */
export const sortKeys = (value) =>
  Array.isArray(value)
    ? value.map(sortKeys)
    : value && typeof value === 'object'
      ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]))
      : value;

/**
 * A text that ends in a JSON object (server-everything's "Raw result: {...}") with that object's
 * keys sorted: the gateway passes the client's answer on as the same JSON, but not with its keys
 * in the client's order (JSON objects have none), and the server prints what it got.
 */
export function sortEmbeddedJson(text) {
  for (let i = text.indexOf('{'); i >= 0; i = text.indexOf('{', i + 1)) {
    try {
      return text.slice(0, i) + JSON.stringify(sortKeys(JSON.parse(text.slice(i))), null, 2);
    } catch {
      // not JSON from here on: try the next brace
    }
  }
  return text;
}
