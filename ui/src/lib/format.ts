// Formatting for the views: durations, times, sizes, percentages.

/** `850 ms`, `4.2 s`, `3 min 05 s`, `2 h 07 min`, `3 d 4 h`. */
export function duration(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.floor(s)} s`;
  const total = Math.floor(s);
  const m = Math.floor(total / 60);
  if (m < 60) return `${m} min ${String(total % 60).padStart(2, '0')} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** A server's state in words: an idle server is an on-demand one between runs. */
export function serverState(state: string): string {
  if (state === 'idle') return 'idle (on demand)';
  return state;
}

/** How long ago `then` was, relative to `now` (both ms since the epoch). */
export function ago(then: number | null | undefined, now: number): string {
  if (then == null) return 'never';
  const d = now - then;
  if (d < 5000) return 'just now';
  return `${duration(d).replace(/ \d+ (s|min)$/, '')} ago`;
}

/** A wake-up in words: `Woke after 1 h 00 min asleep: far reconnecting`, `Network back: nothing waiting`. */
export function wakeup(w: { why: string; slept_s: number; reconnecting: string[] }): string {
  const what = w.why === 'network' ? 'Network back' : w.slept_s > 0 ? `Woke after ${duration(w.slept_s * 1000)} asleep` : 'Woke from sleep';
  const who = w.reconnecting.length ? `${w.reconnecting.join(', ')} reconnecting` : 'no server was waiting to reconnect';
  return `${what}: ${who}`;
}

export function clock(ms: number | null | undefined): string {
  if (ms == null) return '–';
  const d = new Date(ms);
  return d.toLocaleTimeString(undefined, { hour12: false });
}

export function dateTime(ms: number | null | undefined): string {
  if (ms == null) return '–';
  return new Date(ms).toLocaleString(undefined, { hour12: false });
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function percent(ratio: number): string {
  if (!Number.isFinite(ratio)) return '–';
  const p = ratio * 100;
  return `${p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)} %`;
}

/** A progress fraction 0..1, or null when the total is unknown. */
export function fraction(progress: number | null, total: number | null): number | null {
  if (progress == null || total == null || total <= 0) return null;
  return Math.min(1, Math.max(0, progress / total));
}

/** The p-th percentile (0..1) of unsorted values, nearest rank; null when empty. */
export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.round((sorted.length - 1) * p);
  return sorted[Math.min(sorted.length - 1, Math.max(0, i))];
}

/** A payload for the detail pane: pretty JSON, with a note when it was cut. */
export function payloadText(p: { json: string; bytes: number; truncated: boolean } | undefined): string {
  if (!p) return '';
  return p.truncated ? `${p.json}\n… (cut: ${bytes(p.bytes)} in all)` : p.json;
}
