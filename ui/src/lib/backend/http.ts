// The gateway's HTTP API and its event stream, with a bearer token. Used in the browser
// (same origin) and by the desktop app (its webview gets the URL and token from Tauri).

import type { AgentAction, AgentOutcome, AgentsListing, HubEvent } from '../types';

/** An API failure: HTTP status and the gateway's `{error: {code, message}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Every request gives up after this long (a gateway that stops answering is reported). */
const REQUEST_TIMEOUT_MS = 15_000;

export class GatewayClient {
  constructor(
    /** Base URL without a trailing slash; '' for the page's own origin. */
    readonly base: string,
    private readonly token: string,
  ) {}

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    let resp: Response;
    try {
      resp = await fetch(this.base + path, {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
      });
    } catch (e) {
      throw new ApiError(0, 'unreachable', `the gateway did not answer: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    const text = await resp.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // fall through: reported below
    }
    if (!resp.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | null)?.error;
      throw new ApiError(resp.status, err?.code ?? 'http_error', err?.message ?? `${resp.status} ${resp.statusText}`);
    }
    return json as T;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }
  del<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /** The agents on this computer (Claude Code, Cursor, …): installed, connected, adopted. */
  agents(): Promise<AgentsListing> {
    return this.get<AgentsListing>('/api/agents');
  }

  /** Connects, disconnects, adopts or undoes agent `id`; says what it changed (or throws
   * the gateway's error: a malformed or read-only config, nothing to undo, …). */
  agentAction(id: string, action: AgentAction): Promise<AgentOutcome> {
    return this.post<AgentOutcome>(`/api/agents/${encodeURIComponent(id)}/${action}`);
  }

  /**
   * Opens `/api/events` (SSE read through fetch, since EventSource cannot send a bearer
   * header). Resolves when the stream is open; `onEvent` gets each event in order, `onEnd`
   * once when the stream ends or fails. `close()` ends it.
   */
  async openEvents(onEvent: (ev: HubEvent) => void, onEnd: (why: string) => void): Promise<{ close(): void }> {
    const ctl = new AbortController();
    const resp = await fetch(this.base + '/api/events', {
      headers: { Authorization: `Bearer ${this.token}`, Accept: 'text/event-stream' },
      signal: ctl.signal,
      cache: 'no-store',
    });
    if (!resp.ok || !resp.body) {
      const text = await resp.text().catch(() => '');
      let err: { code?: string; message?: string } | undefined;
      try {
        err = JSON.parse(text)?.error;
      } catch {
        err = undefined;
      }
      throw new ApiError(resp.status, err?.code ?? 'http_error', err?.message ?? `event stream refused (${resp.status})`);
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser(onEvent);
    let closed = false;
    (async () => {
      let why = 'the event stream ended';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.push(value);
        }
      } catch (e) {
        why = closed ? 'closed' : `the event stream failed: ${(e as Error).message}`;
      }
      if (!closed) onEnd(why);
    })();
    return {
      close() {
        closed = true;
        ctl.abort();
      },
    };
  }
}

/** Incremental `text/event-stream` parser: only `data:` lines matter (the type is inside). */
export class SseParser {
  private buf = '';
  private data: string[] = [];
  constructor(private readonly onEvent: (ev: HubEvent) => void) {}

  push(chunk: string): void {
    const buf = this.buf + chunk;
    // One pass over the text, one slice per line: a chunk may hold hundreds of events.
    let from = 0;
    let nl: number;
    while ((nl = buf.indexOf('\n', from)) >= 0) {
      let end = nl;
      if (end > from && buf.charCodeAt(end - 1) === 13) end--; // \r\n
      if (end === from) {
        if (this.data.length) {
          const text = this.data.length === 1 ? this.data[0] : this.data.join('\n');
          this.data = [];
          try {
            this.onEvent(JSON.parse(text) as HubEvent);
          } catch {
            // a frame that is not JSON (never sent by the gateway) is skipped
          }
        }
      } else if (buf.startsWith('data:', from)) {
        const start = from + (buf.charCodeAt(from + 5) === 32 ? 6 : 5);
        this.data.push(buf.slice(start, end));
      }
      // `event:`, `id:` and `:` comments carry nothing we need
      from = nl + 1;
    }
    this.buf = from === 0 ? buf : buf.slice(from);
  }
}
