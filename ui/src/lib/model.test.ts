import { describe, expect, it } from 'vitest';
import { Model, RECENT_CALLS } from './model';
import { SseParser } from './backend/http';
import { applyFilter, filterOptions } from './filters';
import type { Call, HubEvent } from './types';

let seq = 0;
const at = (ms: number) => new Date(ms).toISOString();
function ev<T extends HubEvent['type']>(type: T, body: Record<string, unknown>, ms = 1_000_000): HubEvent {
  return { seq: ++seq, timestamp: at(ms), type, ...body } as unknown as HubEvent;
}

function model(now = 1_000_000) {
  const m = new Model(() => now);
  m.loadServers({
    gateway: { version: '0.1.0', uptime_ms: 5000 },
    servers_running: 1,
    servers_total: 1,
    servers: [{ name: 'fx', state: 'running', pid: 1, generation: 1, restarts: 0, tools: 3, uptime_ms: 4000, last_error: null }],
    tools: [],
  });
  m.loadClients([{ name: 'cli', role: 'default', created_ms: 1, last_seen_ms: null, open_sessions: [] }]);
  m.loadProjects([
    { path: '/p', name: 'p', db_path: '/p/db', agent: null, online: false, sockets: 0, first_seen: at(0), last_seen: at(0), last_db_operation: null, last_db_operation_at: null },
  ]);
  return m;
}

describe('Model', () => {
  it('a call goes from started through progress to the history', () => {
    const m = model();
    m.apply(ev('call_started', { call_id: 'c1', tool: 'fx__slow', server: 'fx', client: 'cli' }, 999_000));
    m.apply(ev('call_progress', { call_id: 'c1', progress: 1, total: 4, message: 'step 1' }));
    const before = m.inFlight.get('c1')!;
    m.apply(ev('call_progress', { call_id: 'c1', progress: 1, total: 4, message: 'step 1' }));
    const c = m.inFlight.get('c1')!;
    expect(c).not.toBe(before); // a changed row is a new object (views compare by identity)
    expect(c.progress).toBe(1);
    expect(c.total).toBe(4);
    expect(c.message).toBe('step 1');
    expect(c.client).toBe('cli');
    m.apply(ev('call_finished', { call_id: 'c1', tool: 'fx__slow', server: 'fx', outcome: 'ok', latency_ms: 1000, replay_attempts: 0 }));
    expect(m.inFlight.size).toBe(0);
    expect(m.recent[0]).toMatchObject({ call_id: 'c1', outcome: 'ok', latency_ms: 1000, client: 'cli', message: 'step 1' });
    const s = m.series(60, 10);
    expect(s.rate.reduce((a, b) => a + b, 0) * 10).toBe(1);
    expect(s.latency.filter((x) => x != null)).toEqual([1000]);
  });

  it('a finish already in the snapshot is not counted twice', () => {
    const m = model();
    const done: Call = {
      call_id: 'c7', tool: 't', server: 'fx', client: null, session_id: null, started_ms: 1, finished_ms: 2,
      latency_ms: 1, outcome: 'ok', error: null, replay_attempts: 0, progress: null, total: null, message: null,
    };
    m.loadCalls({ in_flight: [], recent: [done] });
    m.apply(ev('call_finished', { call_id: 'c7', tool: 't', server: 'fx', outcome: 'ok', latency_ms: 1, replay_attempts: 0 }));
    expect(m.recent.length).toBe(1);
  });

  it('history is bounded', () => {
    const m = model();
    for (let i = 0; i < RECENT_CALLS + 10; i++) {
      m.apply(ev('call_finished', { call_id: `c${i}`, tool: 't', server: 'fx', outcome: 'ok', latency_ms: 1, replay_attempts: 0 }));
    }
    expect(m.recent.length).toBe(RECENT_CALLS);
    expect(m.recent[0].call_id).toBe(`c${RECENT_CALLS + 9}`);
  });

  it('failures are listed and server changes ask for a refetch', () => {
    const m = model();
    expect(m.apply(ev('server_crashed', { server: 'fx', reason: 'exit 137' }))).toEqual({ servers: true });
    expect(m.apply(ev('server_state', { server: 'fx', state: 'restarting', reason: 'crashed' }))).toEqual({ servers: true });
    const s = m.servers.get('fx')!;
    expect(s.state).toBe('restarting');
    expect(s.restarts).toBe(1);
    expect(s.running_since).toBeNull();
    m.apply(ev('server_state', { server: 'fx', state: 'running' }));
    expect(m.servers.get('fx')!.running_since).toBe(1_000_000);
    m.apply(ev('call_finished', { call_id: 'c9', tool: 't', server: 'fx', outcome: 'error', latency_ms: 3, replay_attempts: 1, error: 'boom' }));
    expect(m.failures.map((f) => f.what)).toEqual(['t failed', 'fx crashed']);
    expect(m.apply(ev('server_state', { server: 'new', state: 'starting' }))).toEqual({ servers: true });
  });

  it('projects go online and offline; their db operations feed the list', () => {
    const m = model();
    m.apply(ev('project_online', { path: '/p', name: 'p', sockets: 2 }));
    expect(m.projects.get('/p')).toMatchObject({ online: true, sockets: 2 });
    m.apply(ev('db_operation', { project_path: '/p', operation: 'create', entity: 'issue', affected_ids: [1, 2] }));
    expect(m.dbOps[0]).toMatchObject({ operation: 'create', entity: 'issue', affected_ids: [1, 2] });
    expect(m.projects.get('/p')!.last_db_operation).toMatchObject({ operation: 'create' });
    m.apply(ev('project_offline', { path: '/p', name: 'p' }));
    expect(m.projects.get('/p')).toMatchObject({ online: false, sockets: 0 });
    expect(m.apply(ev('project_online', { path: '/q', name: 'q', sockets: 1 }))).toEqual({ projects: true });
  });

  it('sessions and clients', () => {
    const m = model();
    m.apply(ev('session_opened', { session_id: 's1', client: 'cli', transport: 'streamable_http' }));
    expect(m.openSessions('cli')).toBe(1);
    m.apply(ev('session_closed', { session_id: 's1', client: 'cli', transport: 'streamable_http', reason: 'unpaired' }));
    expect(m.openSessions('cli')).toBe(0);
    m.loadSessions({ ws: 0, ws_max: 10, sessions: [], expired: 3, session_idle_ms: 1_800_000 });
    m.apply(ev('session_opened', { session_id: 's2', client: 'cli', transport: 'http' }));
    m.apply(ev('session_closed', { session_id: 's2', client: 'cli', transport: 'http', reason: 'expired' }));
    expect(m.expiredSessions).toBe(4);
    expect(m.expiries[0]).toMatchObject({ session_id: 's2', client: 'cli' });
    expect(m.openSessions('cli')).toBe(0);
    expect(m.apply(ev('client_paired', { name: 'new', role: 'default' }))).toEqual({ clients: true, agents: true });
    expect(m.clients.has('new')).toBe(true);
    expect(m.apply(ev('client_unpaired', { name: 'cli' }))).toEqual({ agents: true });
    expect(m.clients.has('cli')).toBe(false);
    expect(m.apply(ev('lagged', { missed: 10 }))).toEqual({ all: true });
  });

  it("an agent changed by another dashboard or the tray: the agents and clients are read again", () => {
    const m = model();
    expect(m.apply(ev('resumed', { why: 'network', slept_s: 0, reconnecting: ['far'] }))).toBeNull();
    for (let i = 0; i < 12; i++) m.apply(ev('resumed', { why: 'clock', slept_s: 3600 + i, reconnecting: [] }));
    expect(m.wakeups).toHaveLength(10);
    expect(m.wakeups[0]).toMatchObject({ why: 'clock', slept_s: 3611 });
    expect(m.apply(ev('agent_changed', { agent: 'cursor', action: 'connect' }))).toEqual({ agents: true, clients: true });
  });
});

describe('SseParser', () => {
  it('parses events split anywhere, skipping comments and names', () => {
    const got: HubEvent[] = [];
    const p = new SseParser((e) => got.push(e));
    const text =
      ': keep-alive\n\nevent: client_paired\nid: 3\ndata: {"seq":3,"type":"client_paired","name":"a","role":"r"}\n\n' +
      'event: lagged\r\ndata:{"seq":0,"type":"lagged","missed":2}\r\n\r\n';
    for (let i = 0; i < text.length; i += 7) p.push(text.slice(i, i + 7));
    expect(got.map((e) => e.type)).toEqual(['client_paired', 'lagged']);
    expect(got[1]).toMatchObject({ missed: 2 });
  });
});

describe('filters', () => {
  const c = (server: string, tool: string, client: string | null, outcome: Call['outcome']): Call => ({
    call_id: `${server}${tool}`, tool, server, client, session_id: null, started_ms: 0, finished_ms: 1, latency_ms: 1,
    outcome, error: null, replay_attempts: 0, progress: null, total: null, message: null,
  });
  it('empty fields match all; options are sorted and unique', () => {
    const calls = [c('b', 'x', 'k', 'ok'), c('a', 'y', null, 'error'), c('a', 'x', 'k', 'ok')];
    expect(calls.filter((x) => applyFilter(x, { server: 'a', tool: '', client: '', outcome: '' })).length).toBe(2);
    expect(calls.filter((x) => applyFilter(x, { server: '', tool: '', client: 'k', outcome: 'ok' })).length).toBe(2);
    expect(calls.filter((x) => applyFilter(x, { server: '', tool: '', client: '', outcome: 'error' })).length).toBe(1);
    expect(filterOptions(calls)).toEqual({ server: ['a', 'b'], tool: ['x', 'y'], client: ['k'] });
  });
});
