// The dashboard in a real browser (Chromium through playwright-core) against the real
// headless gateway with a real stdio server, real MCP SDK client and a real IEP project.
// Saves a screenshot of each view under docs/. Run by scripts/test-ui.

import { chromium } from 'playwright-core';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Gateway, envelope, projectDir, projectInfo, sleep, until, within } from './gateway.mjs';

const DOCS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs');
const T = 15_000; // every wait on the page is bounded by this

let failures = 0;
async function step(name, fn) {
  const started = Date.now();
  try {
    await within(90_000, name, fn());
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.stack ?? e}`);
    throw e;
  }
}

const gw = new Gateway();
await gw.start();
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
const context = await browser.newContext({ colorScheme: 'light', viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
page.setDefaultTimeout(T);
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(String(e)));
const shot = (name) => page.screenshot({ path: join(DOCS, `dashboard-${name}.png`), fullPage: false });
const tab = (name) => page.getByRole('tab', { name });

let sdk;
let sdkToken;
let ws;
try {
  await step('the page asks for a pairing code, pairs, and goes live', async () => {
    await page.goto(gw.url + '/');
    await page.getByLabel('Pairing code').waitFor();
    const stored = await page.evaluate(() => ({ s: sessionStorage.length, l: localStorage.length }));
    if (stored.s || stored.l) throw new Error(`storage before pairing: ${JSON.stringify(stored)}`);
    await page.getByLabel('Pairing code').fill('000000');
    await page.getByRole('button', { name: 'Pair' }).click();
    await page.getByRole('alert').filter({ hasText: /wrong pairing code/i }).waitFor();
    await page.getByLabel('Pairing code').fill(await gw.code());
    await page.getByRole('button', { name: 'Pair' }).click();
    await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor();
    const where = await page.evaluate(() => ({ session: Object.keys(sessionStorage), local: localStorage.length }));
    if (where.local !== 0 || !where.session.includes('switchboard.token')) throw new Error(`token kept in ${JSON.stringify(where)}`);
    // a reload in the same tab stays signed in
    await page.reload();
    await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor();
  });

  await step('a slow call from the MCP SDK client shows its progress bar advancing to done', async () => {
    sdkToken = await gw.pair('sdk-agent');
    sdk = new Client({ name: 'sdk-agent', version: '1.0.0' });
    await sdk.connect(
      new StreamableHTTPClientTransport(new URL(gw.url + '/mcp'), { requestInit: { headers: { Authorization: `Bearer ${sdkToken}` } } }),
    );
    await tab('Calls').click();
    const progress = [];
    const call = sdk.callTool({ name: 'fx__slow', arguments: { steps: 20, step_ms: 150 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
      timeout: 30_000,
    });
    const bar = page.getByRole('progressbar', { name: 'Progress of fx__slow' });
    await bar.waitFor();
    const seen = [];
    await until('the bar to advance three times', async () => {
      const v = Number(await bar.getAttribute('aria-valuenow', { timeout: 1000 }).catch(() => NaN));
      if (Number.isFinite(v) && v !== seen[seen.length - 1]) seen.push(v);
      return seen.length >= 3;
    }, T, 30);
    for (let i = 1; i < seen.length; i++) if (!(seen[i] > seen[i - 1])) throw new Error(`progress went ${seen}`);
    const row = page.locator('[data-testid=in-flight] tr[data-call]');
    if (!(await row.textContent()).includes('sdk-agent')) throw new Error('the running call does not name its client');
    const result = await call;
    if (!progress.length) throw new Error('the SDK client got no progress');
    if (result.isError) throw new Error(`the call failed: ${JSON.stringify(result)}`);
    await page.locator('[data-testid=history] tr[data-call]').filter({ hasText: 'fx__slow' }).filter({ hasText: 'ok' }).waitFor();
    await page.getByRole('progressbar').waitFor({ state: 'detached' });
    // the detail pane: arguments and result
    await sdk.callTool({ name: 'fx__echo', arguments: { text: 'shown in the detail pane' } });
    const echoRow = page.locator('[data-testid=history] tr[data-call]').filter({ hasText: 'fx__echo' });
    await echoRow.focus();
    await page.keyboard.press('Enter');
    await page.getByTestId('arguments').filter({ hasText: 'shown in the detail pane' }).waitFor();
    await page.getByTestId('result').filter({ hasText: 'shown in the detail pane' }).waitFor();
    // with a call running, history and a detail open: the screenshot
    const second = sdk.callTool({ name: 'fx__slow', arguments: { steps: 10, step_ms: 300 } }, undefined, { onprogress: () => {}, timeout: 30_000 });
    await until('the second call to report progress', async () => Number(await bar.getAttribute('aria-valuenow', { timeout: 1000 }).catch(() => 0)) >= 3, T);
    await shot('calls');
    await second;
    // filters
    await page.getByLabel('Outcome').selectOption('error');
    await page.getByText('No finished calls match the filter').waitFor();
    await page.getByLabel('Outcome').selectOption('');
    console.log(`     progress seen in the page: ${seen.join(' → ')}; SDK notifications: ${progress.length}`);
  });

  await step('a killed server is shown failing and recovering', async () => {
    await sdk.callTool({ name: 'fx__stderr', arguments: { text: 'hello from the fixture stderr' } });
    await tab('Servers').click();
    const row = page.locator('tr[data-server=fx]');
    await row.getByTestId('state').filter({ hasText: 'running' }).waitFor();
    await page.locator('[data-testid=stderr]').filter({ hasText: 'hello from the fixture stderr' }).waitFor();
    await page.evaluate(() => {
      const el = document.querySelector('tr[data-server=fx]');
      window.__states = [];
      new MutationObserver(() => window.__states.push(el.querySelector('[data-testid=state]')?.textContent)).observe(el, { subtree: true, childList: true, characterData: true });
    });
    const before = (await gw.api('/api/servers')).servers.find((s) => s.name === 'fx');
    process.kill(before.pid, 'SIGKILL');
    await until('fx to be running again with one more restart', async () => {
      const restarts = Number(await row.getByTestId('restarts').textContent());
      const state = await row.getByTestId('state').textContent();
      return state === 'running' && restarts === before.restarts + 1;
    });
    const states = await page.evaluate(() => window.__states);
    if (!states.some((s) => s && s !== 'running')) throw new Error(`never saw fx leave running: ${states}`);
    console.log(`     states seen: ${[...new Set(states)].join(' → ')}`);
    await tab('Overview').click();
    await page.getByTestId('failures').filter({ hasText: 'fx crashed' }).waitFor();
    await page.getByTestId('stat-servers').filter({ hasText: '1 / 1' }).waitFor();
    await tab('Servers').click();
    // the view itself, not the Overview still on screen (it once was, in docs/)
    await row.getByTestId('state').filter({ hasText: 'running' }).waitFor();
    await shot('servers');
  });

  await step('a server asks what its client cannot be asked: answered in the page, and one declined', async () => {
    // the SDK client declared no elicitation: Switchboard asks the person instead
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string', title: 'Your name', minLength: 2 },
        size: { type: 'string', title: 'Size', oneOf: [{ const: 's', title: 'Small' }, { const: 'l', title: 'Large' }], default: 's' },
        tags: { type: 'array', title: 'Tags', items: { type: 'string', enum: ['red', 'blue'] } },
        count: { type: 'integer', title: 'Count', minimum: 1 },
        ok: { type: 'boolean', title: 'Agree', default: true },
      },
      required: ['name'],
    };
    const ask = () =>
      sdk.callTool({ name: 'fx__ask', arguments: { method: 'elicitation/create', params: { message: 'Who is asking?', requestedSchema: schema } } }, undefined, { timeout: 30_000 });
    await tab('Overview').click();
    const first = ask();
    await page.getByTestId('requests-banner').waitFor();
    await page.getByTestId('requests-banner').getByRole('button', { name: 'Answer' }).click();
    const card = page.getByTestId('elicitation');
    await card.getByTestId('elicitation-message').filter({ hasText: 'Who is asking?' }).waitFor();
    await card.getByLabel('Your name').fill('A');
    await card.getByTestId('elicitation-accept').click();
    await card.getByTestId('field-error').filter({ hasText: 'At least 2' }).waitFor();
    await card.getByLabel('Your name').fill('Ada');
    await card.getByLabel('Size').selectOption('l');
    await card.getByLabel('blue').check();
    await card.getByLabel('Count').fill('3');
    await shot('elicitation');
    await card.getByTestId('elicitation-accept').click();
    const got = JSON.parse((await first).content[0].text);
    const want = { action: 'accept', content: { count: 3, name: 'Ada', ok: true, size: 'l', tags: ['blue'] } };
    const sorted = (o) => JSON.stringify(o, Object.keys(o.content ?? {}).concat('action', 'content').sort());
    if (sorted(got.result ?? {}) !== sorted(want)) throw new Error(`the server got ${JSON.stringify(got)}`);
    await page.getByTestId('no-requests').waitFor();
    const second = ask();
    await card.getByTestId('elicitation-decline').click();
    const declined = JSON.parse((await second).content[0].text);
    if (declined?.result?.action !== 'decline') throw new Error(`the server got ${JSON.stringify(declined)}`);
    await page.getByTestId('no-requests').waitFor();
  });

  await step("the servers page shows a server's log live", async () => {
    await tab('Servers').click();
    await page.locator('tr[data-server=fx]').click();
    await page.getByTestId('server-log').waitFor();
    await sdk.callTool({ name: 'fx__log', arguments: { level: 'warning', message: 'disk almost full', logger: 'store' } });
    await page.getByTestId('server-log').filter({ hasText: 'disk almost full' }).filter({ hasText: 'warning' }).waitFor();
  });

  await step('a registered project goes online and offline, with its live db_operation feed', async () => {
    await tab('Projects').click();
    const dir = projectDir('dashboard-demo');
    ws = new WebSocket(gw.url.replace('http', 'ws') + '/ws/mcp');
    await within(T, 'ws open', new Promise((r, j) => (ws.once('open', r), ws.once('error', j))));
    const replies = [];
    ws.on('message', (m) => replies.push(JSON.parse(m.toString())));
    ws.send(envelope('hello', { entity_type: 'mcp_server', capabilities: [] }));
    ws.send(envelope('register', projectInfo(dir)));
    await until('registered', () => replies.some((r) => r.type === 'registered'));
    const row = page.locator(`tr[data-project="${dir}"]`);
    await row.getByTestId('project-state').filter({ hasText: 'online' }).waitFor();
    await row.getByTestId('sockets').filter({ hasText: '1' }).waitFor();
    for (const [operation, entity, ids] of [['create', 'task', [1]], ['update', 'task', [1, 2]], ['delete', 'event', [7]]]) {
      ws.send(envelope('db_operation', { operation, entity, affected_ids: ids, project_path: dir }));
    }
    await page.locator('[data-testid=db-feed] tbody tr').nth(2).waitFor();
    await shot('projects');
    ws.close();
    await row.getByTestId('project-state').filter({ hasText: 'offline' }).waitFor();
  });

  await step('a client is unpaired from the page and its session closes', async () => {
    await tab('Clients').click();
    const row = page.locator('tr[data-client=sdk-agent]');
    await row.getByTestId('sessions').filter({ hasText: '1' }).waitFor();
    // what each role grants: everything, or only fx's resources
    await row.getByTestId('grants').filter({ hasText: /\*: \d+ tools \(fx, switchboard\); resources of fx/ }).waitFor();
    await gw.pair('docs-bot', 'fx-docs');
    const docs = page.locator('tr[data-client=docs-bot]').getByTestId('grants');
    await docs.filter({ hasText: 'fx__: no tools; resources of fx' }).waitFor();
    // Pair new client: code with countdown, then a ready-to-paste config made here
    await page.getByRole('button', { name: 'Pair new client…' }).click();
    const code = await page.getByTestId('pair-code').textContent();
    if (!/^\d{6}$/.test(code)) throw new Error(`code ${code}`);
    const first = Number(await page.getByTestId('countdown').textContent());
    await until('the countdown to tick', async () => Number(await page.getByTestId('countdown').textContent()) < first, 5000);
    await shot('clients');
    await page.getByLabel('Client name').fill('my-editor');
    await page.getByRole('button', { name: 'Make its configuration' }).click();
    await page.getByTestId('mcp-json').filter({ hasText: 'Bearer sb_' }).waitFor();
    await page.locator('tr[data-client=my-editor]').waitFor();
    await page.getByRole('button', { name: 'Done' }).click();

    await row.getByRole('button', { name: 'Unpair' }).click();
    await row.getByRole('button', { name: 'Yes, unpair' }).click();
    await row.waitFor({ state: 'detached' });
    const refused = await sdk.listTools().then(
      () => null,
      (e) => String(e),
    );
    if (!refused) throw new Error('the unpaired client can still list tools');
    console.log(`     the unpaired SDK client now gets: ${refused.slice(0, 120)}`);
  });

  await step("an agent is connected and disconnected from the Clients view: its config file says so", async () => {
    await tab('Clients').click();
    const cursorFile = join(gw.home, '.cursor', 'mcp.json');
    const entries = () => JSON.parse(readFileSync(cursorFile, 'utf8')).mcpServers;
    const row = page.locator('tr[data-agent=cursor]');
    await row.getByTestId('agent-state').filter({ hasText: 'not connected' }).waitFor();
    // an agent that is not installed is only named
    await page.getByText(/Not found here: .*Windsurf/).waitFor();
    await row.getByRole('button', { name: 'Connect' }).click();
    const outcome = page.getByTestId('agent-outcome');
    await outcome.filter({ hasText: 'Connect Cursor: done' }).filter({ hasText: `wrote entry "switchboard" in ${cursorFile}` }).waitFor();
    await outcome.filter({ hasText: 'paired as cursor' }).waitFor();
    await row.getByTestId('agent-state').filter({ hasText: /^connected as switchboard/ }).waitFor();
    const written = entries();
    if (written.switchboard?.url !== `${gw.url}/mcp` || !JSON.stringify(written.switchboard).includes('Bearer sb_')) {
      throw new Error(`Cursor's file after Connect: ${JSON.stringify(written)}`);
    }
    if (written.notes?.command !== 'notes-mcp') throw new Error(`Connect lost Cursor's own server: ${JSON.stringify(written)}`);
    // the token Connect paired works, and the paired clients list shows it
    const token = written.switchboard.headers.Authorization.replace('Bearer ', '');
    await gw.api('/api/clients', token);
    await page.locator('tr[data-client=cursor]').waitFor();
    await shot('connect');

    // another dashboard (here: the API called from outside the page) connects Gemini CLI:
    // this page shows it without a reload (agent_changed event)
    const r = await fetch(`${gw.url}/api/agents/gemini-cli/connect`, { method: 'POST', headers: { authorization: `Bearer ${await gw.adminToken()}` } });
    if (!r.ok) throw new Error(`connect gemini-cli: ${r.status} ${await r.text()}`);
    await page.locator('tr[data-agent=gemini-cli]').getByTestId('agent-state').filter({ hasText: /^connected/ }).waitFor();

    // an agent whose config is malformed: the error says which file, nothing changes
    const codexFile = join(gw.home, '.codex', 'config.toml');
    const codexBefore = readFileSync(codexFile, 'utf8');
    await page.locator('tr[data-agent=codex]').getByRole('button', { name: 'Connect' }).click();
    await page.getByTestId('agent-error').filter({ hasText: 'Connect Codex CLI failed; nothing was changed.' }).filter({ hasText: codexFile }).waitFor();
    if (readFileSync(codexFile, 'utf8') !== codexBefore) throw new Error('a failed Connect changed the file');
    await page.locator('tr[data-agent=codex]').getByTestId('agent-state').filter({ hasText: 'not connected' }).waitFor();

    await row.getByRole('button', { name: 'Disconnect' }).click();
    await outcome.filter({ hasText: 'Disconnect Cursor: done' }).filter({ hasText: 'revoked the token of cursor' }).waitFor();
    await row.getByTestId('agent-state').filter({ hasText: 'not connected' }).waitFor();
    const after = entries();
    if ('switchboard' in after || after.notes?.command !== 'notes-mcp') throw new Error(`Cursor's file after Disconnect: ${JSON.stringify(after)}`);
    await page.locator('tr[data-client=cursor]').waitFor({ state: 'detached' });
    const refused = await fetch(`${gw.url}/api/clients`, { headers: { authorization: `Bearer ${token}` } });
    if (refused.status !== 401) throw new Error(`the disconnected agent's token still answers ${refused.status}`);
  });

  await step('overview and telemetry show the traffic', async () => {
    const token = await gw.pair('load');
    const c = new Client({ name: 'load', version: '1' });
    await c.connect(new StreamableHTTPClientTransport(new URL(gw.url + '/mcp'), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
    for (let i = 0; i < 30; i++) {
      await c.callTool({ name: i % 10 === 9 ? 'fx__fail' : 'fx__echo', arguments: i % 10 === 9 ? { message: 'planned failure' } : { text: `n${i}` } });
      await sleep(40);
    }
    await c.close();
    await tab('Telemetry').click();
    await page.getByTestId('telemetry').filter({ hasText: 'fx__echo' }).waitFor();
    await page.getByTestId('telemetry').filter({ hasText: 'fx__fail' }).waitFor();
    await shot('telemetry');
    await tab('Overview').click();
    await page.getByTestId('stat-gateway').filter({ hasText: 'Healthy' }).waitFor();
    // what the desktop test reads too: servers and a client paired meanwhile, by name
    await page.getByTestId('overview-servers').filter({ hasText: 'fx' }).waitFor();
    await page.getByTestId('overview-clients').filter({ hasText: 'load' }).waitFor();
    await shot('overview');
  });

  await step('keyboard: the view tabs move with the arrow keys', async () => {
    await tab('Overview').focus();
    await page.keyboard.press('ArrowRight');
    await page.getByRole('tab', { name: 'Calls', selected: true }).waitFor();
    await page.keyboard.press('End');
    await page.getByRole('tab', { name: /^Requests/, selected: true }).waitFor();
    await page.keyboard.press('Home');
    await page.getByRole('tab', { name: 'Overview', selected: true }).waitFor();
  });

  await step('readable at 200% zoom: no horizontal scrolling of the page', async () => {
    for (const view of ['Overview', 'Calls', 'Servers', 'Clients', 'Projects', 'Telemetry', 'Requests']) {
      await tab(view).click();
      await page.setViewportSize({ width: 640, height: 430 }); // 1280x860 at 200 %
      await sleep(100);
      const over = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      await page.setViewportSize({ width: 1280, height: 860 });
      if (over > 2) throw new Error(`${view} scrolls sideways by ${over}px at 200 %`);
    }
  });

  await step('a lost gateway shows a banner; the page reconnects and resynchronises', async () => {
    await tab('Servers').click();
    await gw.stop();
    await page.getByTestId('banner').waitFor();
    await page.getByTestId('connection').filter({ hasText: 'Offline' }).waitFor();
    await gw.start();
    await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor({ timeout: 30_000 });
    await page.getByTestId('banner').waitFor({ state: 'detached' });
    await page.locator('tr[data-server=fx]').getByTestId('state').filter({ hasText: 'running' }).waitFor();
    const resyncs = await page.evaluate(() => window.__switchboard.stats.resyncs);
    if (resyncs < 2) throw new Error(`resyncs ${resyncs}`);
  });

  if (consoleErrors.length) throw new Error(`errors in the page: ${consoleErrors.join('\n')}`);
} catch (e) {
  failures++;
  await page.screenshot({ path: join(DOCS, '..', 'ui', 'test-results', 'failure.png') }).catch(() => {});
  console.log(`page text at the failure:\n${(await page.locator('body').innerText().catch(() => '')).slice(0, 1500)}`);
  console.log(`gateway log tail:\n${gw.log.slice(-20).join('')}`);
} finally {
  ws?.terminate();
  await sdk?.close().catch(() => {});
  await browser.close();
  await gw.stop();
}
console.log(failures ? 'dashboard browser test FAILED' : 'dashboard browser test passed');
process.exit(failures ? 1 : 0);
