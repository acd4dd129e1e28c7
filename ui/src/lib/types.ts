// Wire types of the gateway's API and event stream (crates/core: http.rs, api.rs, events.rs).

export type ServerState = 'starting' | 'running' | 'restarting' | 'failed' | 'needs_login' | 'disabled' | 'stopped' | 'idle';

/** A remote server's OAuth side (`oauth` in `GET /api/servers`); never a token. */
export interface OAuthView {
  applies: boolean;
  logged_in?: boolean;
  login?: 'idle' | 'waiting' | 'done' | { failed: string };
}

export interface ServerInfo {
  name: string;
  state: ServerState;
  pid: number | null;
  generation: number;
  restarts: number;
  tools: number;
  /** `on_demand`: started by the first call, stopped when idle (`idle` between runs). */
  start?: 'always' | 'on_demand';
  uptime_ms: number | null;
  last_error: string | null;
  stderr_tail?: string[];
  command?: string;
  url?: string | null;
  oauth?: OAuthView;
}

export interface ToolInfo {
  name: string;
  server: string;
  tool: string;
  annotations?: {
    title?: string;
    readOnlyHint?: boolean;
    destructiveHint?: boolean;
    idempotentHint?: boolean;
    openWorldHint?: boolean;
  } | null;
}

export interface ServersSnapshot {
  gateway: { version: string; uptime_ms: number };
  servers_running: number;
  servers_total: number;
  servers: ServerInfo[];
  tools: ToolInfo[];
}

/** What a client's role grants (`grants` in `GET /api/clients`). */
export interface Grants {
  /** The role's allowlist as configured. */
  patterns: string[];
  /** The tools it may see and call now (running servers' and built-in), sorted. */
  tools: string[];
  /** The servers whose resources and resource templates it may list and read. */
  resource_servers: string[];
}

/** `GET /api/sessions`. */
export interface SessionsSnapshot {
  ws: number;
  ws_max: number;
  sessions: { session_id: string; client: string; transport: string; watchers: number; explicit: boolean; idle_ms: number | null }[];
  /** Sessions ended for being idle since the gateway started. */
  expired: number;
  session_idle_ms: number;
}

export interface ClientInfo {
  name: string;
  role: string;
  created_ms: number;
  last_seen_ms: number | null;
  open_sessions: string[];
  /** Absent for a client just paired (from its event) until the list is reloaded. */
  grants?: Grants;
}

export interface ProjectInfo {
  path: string;
  name: string;
  db_path: string;
  agent: string | null;
  online: boolean;
  sockets: number;
  first_seen: string;
  last_seen: string;
  last_db_operation: Record<string, unknown> | null;
  last_db_operation_at: string | null;
}

export interface Payload {
  json: string;
  bytes: number;
  truncated: boolean;
}

export type Outcome = 'running' | 'ok' | 'error';

export interface Call {
  call_id: string;
  tool: string;
  server: string;
  client: string | null;
  session_id: string | null;
  started_ms: number;
  finished_ms: number | null;
  latency_ms: number | null;
  outcome: Outcome;
  error: string | null;
  replay_attempts: number;
  progress: number | null;
  total: number | null;
  message: string | null;
  arguments?: Payload;
  result?: Payload;
}

export interface CallsSnapshot {
  in_flight: Call[];
  recent: Call[];
}

export interface ToolStats {
  server: string;
  tool: string;
  calls: number;
  errors: number;
  error_rate: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
}

export interface TelemetrySnapshot {
  window_calls: number;
  tools: ToolStats[];
  totals: { requests: number; successes: number; errors: number; replays: number };
}

export interface Health {
  status: string;
  version: string;
  uptime_ms: number;
  projects_online: number;
  registration_sockets: number;
}

export interface PairCode {
  code: string;
  expires_in_s: number;
  pair_url: string;
}

export interface PairResult {
  paired: boolean;
  token: string;
  name: string;
  role: string;
  client_config: { url: string; claude_code: string; mcp_json: unknown };
}

/** What can be done to an agent (`POST /api/agents/{id}/{action}`). */
export type AgentAction = 'connect' | 'disconnect' | 'adopt' | 'undo';

/** An agent Switchboard can connect (`GET /api/agents`). */
export interface AgentInfo {
  /** Its id: `claude-code`, `cursor`, … */
  client: string;
  label: string;
  /** Its config file or directory exists here. */
  installed: boolean;
  /** Its config has an entry naming this gateway whose token is paired. */
  connected: boolean;
  entry: string | null;
  path: string | null;
  /** Servers of its own (outside our entry) that Adopt would move. */
  own_servers: number;
  /** Its servers were adopted; Undo puts them back. */
  adopted: boolean;
}

export interface AgentsListing {
  url: string;
  agents: AgentInfo[];
}

/** What an agent action did: `lines` in words, and the details of the one that ran. */
export interface AgentOutcome {
  lines: string[];
  report?: { path: string; changed: boolean; backup: string | null; paired: string | null; revoked: string | null; via: string };
  adopted?: { path: string; backup: string; servers: [string, string][] };
  undone?: { path: string; servers: string[] };
}

/** What woke remote servers out of their backoff: a sleep seen by the clock or logind, or the network back. */
export type WakeReason = 'clock' | 'logind' | 'network';

/** A wake-up as the dashboard keeps it. */
export interface Wakeup {
  why: WakeReason;
  slept_s: number;
  reconnecting: string[];
  at: number;
}

/** Every HubEvent as stamped by the bus (`type` is the tag). */
export type HubEvent = { seq: number; timestamp: string } & (
  | { type: 'project_online'; path: string; name: string; sockets: number }
  | { type: 'project_offline'; path: string; name: string }
  | { type: 'db_operation'; project_path: string; operation: string; entity: string; affected_ids: number[]; data?: unknown }
  | { type: 'server_state'; server: string; state: ServerState; reason?: string }
  | { type: 'server_crashed'; server: string; reason: string }
  | { type: 'server_tools_changed'; server: string; tools: number }
  | { type: 'call_started'; call_id: string; tool: string; server: string; session_id?: string; client?: string | null }
  | { type: 'call_progress'; call_id: string; progress: number; total?: number; message?: string }
  | { type: 'call_finished'; call_id: string; tool: string; server: string; outcome: 'ok' | 'error'; latency_ms: number; replay_attempts: number; error?: string }
  | { type: 'client_paired'; name: string; role: string }
  | { type: 'client_unpaired'; name: string }
  | { type: 'session_opened'; session_id: string; client: string; transport: string }
  | { type: 'session_closed'; session_id: string; client: string; transport: string; reason: string }
  | { type: 'elicitation_pending'; elicitation: Elicitation }
  | { type: 'elicitation_ended'; id: string; server: string; outcome: 'accept' | 'decline' | 'cancel' | 'timeout' | 'gone' }
  | ({ type: 'server_log'; server: string } & LogEntry)
  | { type: 'agent_changed'; agent: string; action: AgentAction }
  | { type: 'resumed'; why: WakeReason; slept_s: number; reconnecting: string[] }
  | { type: 'lagged'; missed: number }
);

/** An elicitation Switchboard answers itself (its client cannot be asked). */
export interface Elicitation {
  id: string;
  server: string;
  client?: string;
  message: string;
  mode: 'form' | 'url';
  requested_schema?: unknown;
  url?: string;
  created: string;
  deadline: string;
}

/** One log message of a server (`notifications/message`). */
export interface LogEntry {
  received: string;
  level: string;
  logger?: string;
  data: unknown;
}

/** The desktop app's pairing window: the tray's code and where it stands. */
export type PairCodeView = { code: string; pair_url: string; ttl_s: number } & (
  | { state: 'pending'; left_ms: number }
  | { state: 'used'; by: string }
  | { state: 'gone' }
);
