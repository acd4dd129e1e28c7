// What a role grants, in words for the Clients view (the data is `grants` in /api/clients).

import type { Grants } from './types';

export interface GrantText {
  /** The role's patterns, or that it has none. */
  patterns: string;
  /** How many tools, and of which servers. */
  tools: string;
  /** Whose resources. */
  resources: string;
}

function plural(n: number, one: string): string {
  return `${n} ${one}${n === 1 ? '' : 's'}`;
}

/** The server part of `<server>__<tool>` (built-in tools are `switchboard`'s). */
function serverOf(tool: string): string {
  const i = tool.indexOf('__');
  return i < 0 ? tool : tool.slice(0, i);
}

export function grantText(g: Grants): GrantText {
  const servers = [...new Set(g.tools.map(serverOf))];
  return {
    patterns: g.patterns.length ? g.patterns.join(' ') : 'nothing (locked out)',
    tools: g.tools.length ? `${plural(g.tools.length, 'tool')} (${servers.join(', ')})` : 'no tools',
    resources: g.resource_servers.length ? `resources of ${g.resource_servers.join(', ')}` : 'no resources',
  };
}
