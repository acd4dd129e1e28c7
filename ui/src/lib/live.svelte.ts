// Keeps the Model current: one event stream, snapshots on (re)connect, batched renders.
//
// Events are queued as they arrive and applied in one batch per animation frame, at most 20
// times a second (every 100 ms when the page is hidden), so 1,000 events/s cost 20 renders,
// not 1,000.
// A lost stream shows a banner and reconnects with backoff (0.5 s doubling to 15 s); every
// (re)connect fetches the REST snapshots again, so nothing missed while away stays missing.

import { ApiError, type GatewayClient } from './backend';
import { Model, type Refetch } from './model';
import type { AgentAction, AgentOutcome, CallsSnapshot, ClientInfo, Elicitation, HubEvent, LogEntry, ProjectInfo, ServersSnapshot, SessionsSnapshot } from './types';

export type Connection = 'connecting' | 'live' | 'reconnecting' | 'unauthorized';

/** Queue bound: beyond this the page is hopelessly behind; it drops the queue and resyncs. */
const MAX_QUEUE = 50_000;
const BACKOFF_MIN_MS = 500;
/** Renders at most 20 times a second. */
const MIN_RENDER_MS = 50;
const BACKOFF_MAX_MS = 15_000;

export class Live {
  readonly model = new Model();
  /** Bumped after every applied batch: views re-derive from the model when it changes. */
  version = $state(0);
  connection: Connection = $state('connecting');
  /** Why the stream is down, for the banner. */
  problem = $state('');
  nextRetryAt = $state(0);

  /** For the load measurement (read by the browser test through `window.__switchboard`). */
  readonly stats = { received: 0, applied: 0, maxQueue: 0, batches: 0, resyncs: 0 };

  private queue: HubEvent[] = [];
  private lastFlush = 0;
  /** While snapshots load, events wait so that an older snapshot never overwrites them. */
  private holding = false;
  private scheduled = false;
  private stream: { close(): void } | null = null;
  private stopped = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pending: Refetch = {};
  private refetchTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly client: GatewayClient,
    private readonly onUnauthorized: () => void,
  ) {}

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.stream?.close();
    this.stream = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.refetchTimer) clearTimeout(this.refetchTimer);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    try {
      this.stream = await this.client.openEvents(
        (ev) => this.receive(ev),
        (why) => this.lost(why),
      );
      // Snapshots after the stream is open: events from now on are queued and applied after.
      await this.resync();
      this.attempt = 0;
      this.connection = 'live';
      this.problem = '';
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.connection = 'unauthorized';
        this.stop();
        this.onUnauthorized();
        return;
      }
      this.stream?.close();
      this.stream = null;
      this.lost((e as Error).message);
    }
  }

  private lost(why: string): void {
    if (this.stopped) return;
    this.stream = null;
    this.connection = 'reconnecting';
    this.problem = why;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt++;
    this.nextRetryAt = Date.now() + delay;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  /** Reconnects now (the banner's Retry button). */
  retry(): void {
    if (this.connection !== 'reconnecting') return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    void this.connect();
  }

  private receive(ev: HubEvent): void {
    this.stats.received++;
    this.queue.push(ev);
    if (this.queue.length > this.stats.maxQueue) this.stats.maxQueue = this.queue.length;
    if (this.queue.length > MAX_QUEUE) {
      this.queue = [];
      this.want({ all: true });
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      this.scheduled = false;
      this.lastFlush = performance.now();
      this.flush();
    };
    // At most one render per MIN_RENDER_MS: under a flood, fewer and larger batches.
    const wait = Math.max(0, this.lastFlush + MIN_RENDER_MS - performance.now());
    const visible = typeof document !== 'undefined' && !document.hidden && typeof requestAnimationFrame === 'function';
    if (visible && wait === 0) requestAnimationFrame(run);
    else if (visible) setTimeout(() => requestAnimationFrame(run), wait);
    else setTimeout(run, Math.max(wait, 100));
  }

  private flush(): void {
    if (this.holding) return; // resync() flushes when its snapshots are in
    const batch = this.queue;
    this.queue = [];
    for (const ev of batch) {
      const refetch = this.model.apply(ev);
      if (refetch) this.want(refetch);
    }
    this.stats.applied += batch.length;
    this.stats.batches++;
    if (batch.length) this.version++;
  }

  /** Collects refetches for 250 ms, then does them together. */
  private want(r: Refetch): void {
    Object.assign(this.pending, r);
    if (this.refetchTimer) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = null;
      const p = this.pending;
      this.pending = {};
      void this.refetch(p).catch((e) => this.report(e));
    }, 250);
  }

  private report(e: unknown): void {
    if (e instanceof ApiError && e.status === 401) {
      this.connection = 'unauthorized';
      this.stop();
      this.onUnauthorized();
    }
  }

  async refetch(p: Refetch): Promise<void> {
    const c = this.client;
    const jobs: Promise<void>[] = [];
    if (p.all || p.servers) jobs.push(c.get<ServersSnapshot>('/api/servers').then((s) => this.model.loadServers(s)));
    if (p.all || p.clients) jobs.push(c.get<ClientInfo[]>('/api/clients').then((s) => this.model.loadClients(s)));
    if (p.all) jobs.push(c.get<SessionsSnapshot>('/api/sessions').then((s) => this.model.loadSessions(s)));
    if (p.all || p.projects) jobs.push(c.get<ProjectInfo[]>('/api/projects').then((s) => this.model.loadProjects(s)));
    if (p.all) jobs.push(c.get<CallsSnapshot>('/api/calls?limit=1000').then((s) => this.model.loadCalls(s)));
    if (p.all || p.agents) jobs.push(this.fetchAgents());
    if (p.all) jobs.push(c.get<{ elicitations: Elicitation[] }>('/api/elicitations').then((s) => this.model.loadElicitations(s.elicitations)));
    if (p.all) for (const server of this.model.logs.keys()) jobs.push(this.fetchLogs(server));
    await Promise.all(jobs);
    this.version++;
  }

  /** The agents; a failure to read them (no home directory) is shown in their place, the
   * rest of the snapshot stands. */
  private async fetchAgents(): Promise<void> {
    try {
      this.model.agents = await this.client.agents();
      this.model.agentsError = '';
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      this.model.agentsError = (e as Error).message;
    }
  }

  /** Runs an agent action and reads the agents again at once (its event does the same for
   * every other open dashboard). */
  async agentAction(id: string, action: AgentAction): Promise<AgentOutcome> {
    const outcome = await this.client.agentAction(id, action);
    await this.refetch({ agents: true, clients: true });
    return outcome;
  }

  private async fetchLogs(server: string): Promise<void> {
    const s = await this.client.get<{ logs: LogEntry[] }>(`/api/servers/${encodeURIComponent(server)}/logs`);
    this.model.loadLogs(server, s.logs);
  }

  /** Starts keeping `server`'s log (the servers page's log view): fetched, then live. */
  async watchLogs(server: string): Promise<void> {
    await this.fetchLogs(server);
    this.version++;
  }

  /** Answers elicitation `id` (`POST /api/elicitations/{id}`); a refused answer throws. */
  async answerElicitation(id: string, answer: { action: 'accept'; content?: Record<string, unknown> } | { action: 'decline' | 'cancel' }): Promise<void> {
    await this.client.post(`/api/elicitations/${encodeURIComponent(id)}`, answer);
    this.model.elicitations.delete(id);
    this.version++;
  }

  async resync(): Promise<void> {
    this.stats.resyncs++;
    this.holding = true;
    try {
      await this.refetch({ all: true });
    } finally {
      this.holding = false;
      this.schedule();
    }
  }
}
