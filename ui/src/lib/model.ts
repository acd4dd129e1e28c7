// The dashboard's state: snapshots from the REST API, kept current by hub events.
// Plain TypeScript (no framework) so that it is unit-tested and cheap at 1,000 events/s; the
// Svelte side re-reads it once per animation frame.

import type {
  AgentsListing,
  Call,
  Elicitation,
  LogEntry,
  CallsSnapshot,
  ClientInfo,
  HubEvent,
  ProjectInfo,
  ServerInfo,
  ServersSnapshot,
  SessionsSnapshot,
  ToolInfo,
  Wakeup,
} from './types';

/** Finished calls kept in the page. */
export const RECENT_CALLS = 1000;
/** Live db_operation feed length. */
export const DB_FEED = 200;
/** Seconds of per-second series kept for the plots. */
export const SERIES_SECONDS = 600;
export const FAILURES = 50;
/** Log messages kept per server (as the gateway keeps). */
export const LOG_LINES = 500;

export interface DbOp {
  seq: number;
  at: string;
  project_path: string;
  operation: string;
  entity: string;
  affected_ids: number[];
}

export interface Failure {
  at: number;
  what: string;
  detail: string;
}

/** Calls per second, errors and latency for one second. */
export interface Bucket {
  second: number;
  calls: number;
  errors: number;
  latencySum: number;
  latencyMax: number;
}

/** What needs fetching again after events (debounced by the caller). */
export interface Refetch {
  servers?: boolean;
  clients?: boolean;
  projects?: boolean;
  agents?: boolean;
  all?: boolean;
}

export interface Session {
  session_id: string;
  client: string;
  transport: string;
}

/**
 * Replaces the entry under `key` with a shallow copy and returns it for changing: views
 * compare rows by identity, so a changed row must be a new object.
 */
function copy<K, V extends object>(map: Map<K, V>, key: K): V | undefined {
  const old = map.get(key);
  if (!old) return undefined;
  const fresh = { ...old };
  map.set(key, fresh);
  return fresh;
}

export class Model {
  servers = new Map<string, ServerInfo & { running_since: number | null }>();
  tools: ToolInfo[] = [];
  gateway: { version: string; started_ms: number } | null = null;
  clients = new Map<string, ClientInfo>();
  projects = new Map<string, ProjectInfo>();
  inFlight = new Map<string, Call>();
  /** Newest first. */
  recent: Call[] = [];
  private recentIds = new Set<string>();
  /** Newest first. */
  dbOps: DbOp[] = [];
  /** Newest first. */
  failures: Failure[] = [];
  /** Per-second buckets, oldest first, only seconds with calls. */
  buckets: Bucket[] = [];
  /** Live MCP sessions learned from session events (when the gateway sends them). */
  sessions = new Map<string, Session>();
  sessionEvents = false;
  /** Sessions the gateway ended for being idle since it started, and how long idle is. */
  expiredSessions = 0;
  sessionIdleMs: number | null = null;
  /** The latest expiries, newest first (at most 20). */
  expiries: { session_id: string; client: string; at: number }[] = [];
  /** The latest wake-ups (sleep over, network back), newest first (at most 10). */
  wakeups: Wakeup[] = [];
  lastSeq = 0;
  eventsApplied = 0;
  /** Elicitations waiting for the person, by id (oldest first). */
  elicitations = new Map<string, Elicitation>();
  /** Servers' recent log messages, oldest first: only for servers whose log was opened. */
  logs = new Map<string, LogEntry[]>();
  /** The agents on this computer, as last read (`null` before the first read). */
  agents: AgentsListing | null = null;
  /** Why the agents could not be read, if they could not (the rest of the page still works). */
  agentsError = '';

  constructor(private readonly now: () => number = Date.now) {}

  loadServers(s: ServersSnapshot): void {
    const now = this.now();
    this.gateway = { version: s.gateway.version, started_ms: now - s.gateway.uptime_ms };
    this.servers = new Map(
      s.servers.map((v) => [v.name, { ...v, running_since: v.uptime_ms == null ? null : now - v.uptime_ms }]),
    );
    this.tools = s.tools;
  }

  loadElicitations(list: Elicitation[]): void {
    this.elicitations = new Map(list.map((e) => [e.id, e]));
  }

  /** `server`'s log as fetched; from now on its `server_log` events are kept too. */
  loadLogs(server: string, list: LogEntry[]): void {
    this.logs.set(server, list.slice(-LOG_LINES));
  }

  loadClients(list: ClientInfo[]): void {
    this.clients = new Map(list.map((c) => [c.name, c]));
  }

  loadSessions(s: SessionsSnapshot): void {
    this.expiredSessions = s.expired;
    this.sessionIdleMs = s.session_idle_ms;
  }

  loadProjects(list: ProjectInfo[]): void {
    this.projects = new Map(list.map((p) => [p.path, p]));
  }

  loadCalls(s: CallsSnapshot): void {
    this.inFlight = new Map(s.in_flight.map((c) => [c.call_id, c]));
    const known = new Set(s.recent.map((c) => c.call_id));
    // keep calls finished in the page that the snapshot does not list (filtered views)
    const extra = this.recent.filter((c) => !known.has(c.call_id));
    this.recent = [...s.recent, ...extra]
      .sort((a, b) => (b.finished_ms ?? 0) - (a.finished_ms ?? 0))
      .slice(0, RECENT_CALLS);
    this.recentIds = new Set(this.recent.map((c) => c.call_id));
    if (this.buckets.length === 0) {
      for (const c of [...s.recent].reverse()) this.count(c.finished_ms ?? c.started_ms, c.latency_ms ?? 0, c.outcome === 'error');
    }
  }

  /** Applies one event; says what must be fetched again. */
  apply(ev: HubEvent): Refetch | null {
    this.eventsApplied++;
    if (ev.seq > 0) this.lastSeq = ev.seq;
    const now = this.now();
    switch (ev.type) {
      case 'lagged':
        return { all: true };
      case 'server_state': {
        const s = copy(this.servers, ev.server);
        if (!s) return { servers: true };
        if (ev.state === 'running' && s.state !== 'running') {
          s.running_since = now;
          s.generation += 1;
        }
        if (ev.state !== 'running') s.running_since = null;
        if (ev.state === 'restarting') s.restarts += 1;
        if (ev.reason) s.last_error = ev.reason;
        s.state = ev.state;
        // pid, tools and stderr change with the state: fetch the details
        return { servers: true };
      }
      case 'server_crashed':
        this.fail(now, `${ev.server} crashed`, ev.reason);
        return { servers: true };
      case 'server_tools_changed': {
        const s = copy(this.servers, ev.server);
        if (s) s.tools = ev.tools;
        return { servers: true };
      }
      case 'call_started':
        this.inFlight.set(ev.call_id, {
          call_id: ev.call_id,
          tool: ev.tool,
          server: ev.server,
          client: ev.client ?? null,
          session_id: ev.session_id ?? null,
          started_ms: Date.parse(ev.timestamp) || now,
          finished_ms: null,
          latency_ms: null,
          outcome: 'running',
          error: null,
          replay_attempts: 0,
          progress: null,
          total: null,
          message: null,
        });
        return null;
      case 'call_progress': {
        const c = copy(this.inFlight, ev.call_id);
        if (c) {
          c.progress = ev.progress;
          c.total = ev.total ?? null;
          if (ev.message != null) c.message = ev.message;
        }
        return null;
      }
      case 'call_finished': {
        const started = this.inFlight.get(ev.call_id);
        this.inFlight.delete(ev.call_id);
        if (this.recentIds.has(ev.call_id)) return null; // already in the snapshot
        const finished = Date.parse(ev.timestamp) || now;
        const call: Call = {
          ...(started ?? {
            call_id: ev.call_id,
            tool: ev.tool,
            server: ev.server,
            client: null,
            session_id: null,
            started_ms: finished - ev.latency_ms,
            progress: null,
            total: null,
            message: null,
          }),
          finished_ms: finished,
          latency_ms: ev.latency_ms,
          outcome: ev.outcome,
          error: ev.error ?? null,
          replay_attempts: ev.replay_attempts,
        };
        this.recent.unshift(call);
        this.recentIds.add(call.call_id);
        if (this.recent.length > RECENT_CALLS) {
          for (const old of this.recent.splice(RECENT_CALLS)) this.recentIds.delete(old.call_id);
        }
        this.count(finished, ev.latency_ms, ev.outcome === 'error');
        if (ev.outcome === 'error') this.fail(finished, `${ev.tool} failed`, ev.error ?? 'error');
        return null;
      }
      case 'client_paired':
        if (!this.clients.has(ev.name)) {
          this.clients.set(ev.name, { name: ev.name, role: ev.role, created_ms: now, last_seen_ms: null, open_sessions: [] });
        }
        // an agent connected elsewhere (`switchboard setup`) pairs a client
        return { clients: true, agents: true };
      case 'client_unpaired':
        this.clients.delete(ev.name);
        for (const [id, s] of this.sessions) if (s.client === ev.name) this.sessions.delete(id);
        // an agent whose token this was is no longer connected
        return { agents: true };
      case 'resumed':
        this.wakeups = [{ why: ev.why, slept_s: ev.slept_s, reconnecting: ev.reconnecting, at: now }, ...this.wakeups].slice(0, 10);
        // the servers named reconnect now: their states follow as server_state events
        return null;
      case 'agent_changed':
        return { agents: true, clients: true };
      case 'session_opened': {
        this.sessionEvents = true;
        this.sessions.set(ev.session_id, { session_id: ev.session_id, client: ev.client, transport: ev.transport });
        const c = copy(this.clients, ev.client);
        if (c && !c.open_sessions.includes(ev.session_id)) c.open_sessions = [...c.open_sessions, ev.session_id];
        if (c) c.last_seen_ms = now;
        return null;
      }
      case 'session_closed': {
        this.sessionEvents = true;
        this.sessions.delete(ev.session_id);
        const c = copy(this.clients, ev.client);
        if (c) c.open_sessions = c.open_sessions.filter((s) => s !== ev.session_id);
        if (ev.reason === 'expired') {
          this.expiredSessions++;
          this.expiries = [{ session_id: ev.session_id, client: ev.client, at: now }, ...this.expiries].slice(0, 20);
        }
        return null;
      }
      case 'project_online': {
        const p = copy(this.projects, ev.path);
        if (!p) return { projects: true };
        p.online = true;
        p.sockets = ev.sockets;
        p.last_seen = ev.timestamp;
        return null;
      }
      case 'project_offline': {
        const p = copy(this.projects, ev.path);
        if (!p) return { projects: true };
        p.online = false;
        p.sockets = 0;
        p.last_seen = ev.timestamp;
        return null;
      }
      case 'elicitation_pending':
        this.elicitations.set(ev.elicitation.id, ev.elicitation);
        return null;
      case 'elicitation_ended':
        this.elicitations.delete(ev.id);
        return null;
      case 'server_log': {
        const old = this.logs.get(ev.server);
        if (!old) return null;
        const next = [...old, { received: ev.received, level: ev.level, logger: ev.logger, data: ev.data }];
        this.logs.set(ev.server, next.length > LOG_LINES ? next.slice(-LOG_LINES) : next);
        return null;
      }
      case 'db_operation': {
        this.dbOps.unshift({
          seq: ev.seq,
          at: ev.timestamp,
          project_path: ev.project_path,
          operation: ev.operation,
          entity: ev.entity,
          affected_ids: ev.affected_ids,
        });
        if (this.dbOps.length > DB_FEED) this.dbOps.length = DB_FEED;
        const p = copy(this.projects, ev.project_path);
        if (p) {
          p.last_db_operation = { operation: ev.operation, entity: ev.entity, affected_ids: ev.affected_ids };
          p.last_db_operation_at = ev.timestamp;
        }
        return null;
      }
      default:
        return null;
    }
  }

  private fail(at: number, what: string, detail: string): void {
    this.failures.unshift({ at, what, detail });
    if (this.failures.length > FAILURES) this.failures.length = FAILURES;
  }

  private count(at: number, latency: number, error: boolean): void {
    const second = Math.floor(at / 1000);
    let b = this.buckets[this.buckets.length - 1];
    if (!b || b.second !== second) {
      // out-of-order seconds (rare: snapshot vs. stream) go to their own bucket in order
      const i = this.buckets.findIndex((x) => x.second === second);
      if (i >= 0) b = this.buckets[i];
      else {
        b = { second, calls: 0, errors: 0, latencySum: 0, latencyMax: 0 };
        this.buckets.push(b);
        this.buckets.sort((x, y) => x.second - y.second);
      }
    }
    b.calls++;
    if (error) b.errors++;
    b.latencySum += latency;
    b.latencyMax = Math.max(b.latencyMax, latency);
    const oldest = Math.floor(this.now() / 1000) - SERIES_SECONDS;
    while (this.buckets.length && this.buckets[0].second < oldest) this.buckets.shift();
  }

  /**
   * The last `seconds` seconds in `step`-second steps ending now: calls per second, mean
   * latency (null where no call finished) and errors.
   */
  series(seconds: number, step: number): { t: number[]; rate: number[]; latency: (number | null)[]; errors: number[] } {
    const end = Math.floor(this.now() / 1000);
    const n = Math.ceil(seconds / step);
    const start = end - n * step + 1;
    const calls = new Array<number>(n).fill(0);
    const errs = new Array<number>(n).fill(0);
    const lat = new Array<number>(n).fill(0);
    for (const b of this.buckets) {
      if (b.second < start || b.second > end) continue;
      const i = Math.floor((b.second - start) / step);
      calls[i] += b.calls;
      errs[i] += b.errors;
      lat[i] += b.latencySum;
    }
    return {
      t: calls.map((_, i) => (start + i * step) * 1000),
      rate: calls.map((c) => c / step),
      latency: calls.map((c, i) => (c ? lat[i] / c : null)),
      errors: errs,
    };
  }

  /** Open sessions of a client: from session events when the gateway sends them. */
  openSessions(client: string): number {
    return this.clients.get(client)?.open_sessions.length ?? 0;
  }
}
