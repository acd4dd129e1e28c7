// Call filters of the Calls view.
import type { Call } from './types';

export interface CallFilter {
  server: string;
  tool: string;
  client: string;
  outcome: string;
}

/** Whether `c` passes `f` (empty fields match everything). */
export function applyFilter(c: Call, f: CallFilter): boolean {
  return (
    (!f.server || c.server === f.server) &&
    (!f.tool || c.tool === f.tool) &&
    (!f.client || c.client === f.client) &&
    (!f.outcome || c.outcome === f.outcome)
  );
}

/** The values seen in `calls`, sorted, for the filter menus. */
export function filterOptions(calls: Call[]): { server: string[]; tool: string[]; client: string[] } {
  const s = new Set<string>();
  const t = new Set<string>();
  const c = new Set<string>();
  for (const x of calls) {
    s.add(x.server);
    t.add(x.tool);
    if (x.client) c.add(x.client);
  }
  const sorted = (x: Set<string>) => [...x].sort();
  return { server: sorted(s), tool: sorted(t), client: sorted(c) };
}
