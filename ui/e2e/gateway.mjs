// A real headless gateway for the browser tests: `switchboard serve` on a free port with a
// temp config (token store in a file, so a restarted gateway keeps the page's token) and
// the fixture stdio server; pairing codes from `switchboard pair` (the control socket).

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { promisify } from 'node:util';

const run = promisify(execFile);

// Gateways started here that are still running: however this script ends (a failed check, an
// uncaught error, a signal), none of them outlives it.
const running = new Set();
const killRunning = () => {
  for (const p of running) {
    try {
      p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  running.clear();
};
process.on('exit', killRunning);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killRunning();
    process.kill(process.pid, sig);
  });
}

export const BIN = process.env.SWITCHBOARD_BIN;
export const FIXTURE = process.env.SWITCHBOARD_FIXTURE_BIN;
if (!BIN || !FIXTURE) throw new Error('set SWITCHBOARD_BIN and SWITCHBOARD_FIXTURE_BIN (scripts/test-ui does)');

/** Rejects after `ms` with `what` unless `promise` settles first. */
export function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms))),
  ]);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value (bounded). */
export async function until(what, check, ms = 15_000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(every);
  }
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export class Gateway {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'switchboard-ui-'));
    this.dataDir = join(this.dir, 'data');
    this.config = join(this.dir, 'switchboard.toml');
    // a throwaway home with agents' configs in it: what the Clients view's Connect edits
    this.home = join(this.dir, 'home');
    mkdirSync(join(this.home, '.cursor'), { recursive: true });
    writeFileSync(join(this.home, '.cursor', 'mcp.json'), JSON.stringify({ mcpServers: { notes: { command: 'notes-mcp', args: ['--stdio'] } } }, null, 2) + '\n');
    mkdirSync(join(this.home, '.gemini'), { recursive: true });
    mkdirSync(join(this.home, '.codex'), { recursive: true });
    writeFileSync(join(this.home, '.codex', 'config.toml'), '[mcp_servers.broken\nurl = \n');
    this.proc = null;
    this.port = 0;
    this.log = [];
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    if (!this.started) {
      writeFileSync(
        this.config,
        `# written by the dashboard's browser test\n[auth]\ntoken_store = "file"\n\n[roles]\ndefault = ["*"]\nfx-docs = ["fx__"]\n\n[[servers]]\nname = "fx"\ncommand = ${JSON.stringify(FIXTURE)}\n`,
      );
    }
    this.started = true;
    this.proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${this.port}`, '--config', this.config, '--data-dir', this.dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HOME: this.home, XDG_CONFIG_HOME: join(this.home, '.config'), SWITCHBOARD_LOG: process.env.SWITCHBOARD_LOG ?? 'warn' },
    });
    running.add(this.proc);
    this.proc.once('exit', ((p) => () => running.delete(p))(this.proc));
    const keep = (d) => {
      this.log.push(d.toString());
      if (this.log.length > 200) this.log.shift();
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    const proc = this.proc;
    await until('the gateway to answer /healthz', async () => {
      if (proc.exitCode !== null) throw new Error(`gateway exited ${proc.exitCode}: ${this.log.join('')}`);
      const r = await fetch(`${this.url}/healthz`).catch(() => null);
      return r?.ok;
    }, 20_000);
    await until('fx to run', async () => (await this.api('/api/servers', await this.adminToken())).servers.some((s) => s.name === 'fx' && s.state === 'running'), 20_000);
  }

  /** Stops the gateway (SIGTERM, then SIGKILL after 10 s). */
  async stop() {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await within(12_000, 'gateway exit', Promise.race([exited, sleep(10_000).then(() => p.kill('SIGKILL'))]));
    await within(5_000, 'gateway exit after SIGKILL', exited);
  }

  /** A fresh pairing code from `switchboard pair` (for `role`, if given). */
  async code(role) {
    const args = ['pair', '--data-dir', this.dataDir, ...(role ? ['--role', role] : [])];
    const { stdout } = await within(15_000, 'switchboard pair', run(BIN, args));
    const code = stdout.trim().split('\n').pop().trim();
    if (!/^\d{6}$/.test(code)) throw new Error(`no code in ${JSON.stringify(stdout)}`);
    return code;
  }

  /** Pairs a client over HTTP the way real ones do; returns its token. */
  async pair(name, role) {
    const r = await fetch(`${this.url}/pair`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code: await this.code(role), name }),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(`pairing ${name} failed: ${JSON.stringify(body)}`);
    return body.token;
  }

  async adminToken() {
    this.admin ??= await this.pair('e2e-admin');
    return this.admin;
  }

  async api(path, token) {
    const r = await fetch(this.url + path, { headers: { authorization: `Bearer ${token ?? (await this.adminToken())}` } });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json();
  }
}

/** A project directory the registration server accepts (outside the temp dir). */
export function projectDir(name) {
  const base = process.env.SWITCHBOARD_PROJECTS_DIR;
  if (!base) throw new Error('set SWITCHBOARD_PROJECTS_DIR to a directory outside the temp dir');
  const dir = join(base, `${name}-${process.pid}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  return realpathSync(dir);
}

/** An IEP envelope (registration/protocol.rs). */
export function envelope(type, payload) {
  return JSON.stringify({ version: '1.0', type, payload, timestamp: new Date().toISOString() });
}

export function projectInfo(path) {
  return {
    path,
    name: path.split('/').pop(),
    db_path: `${path}/.intent-engine/project.db`,
    agent: 'claude-code',
    mcp_connected: true,
    is_online: true,
  };
}
