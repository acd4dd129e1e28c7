import { describe, expect, it } from 'vitest';
import { grantText } from './grants';

describe('grantText', () => {
  it('says which tools and whose resources a role grants', () => {
    expect(
      grantText({ patterns: ['fx__echo', 'fy__*'], tools: ['fx__echo', 'fy__add', 'fy__echo'], resource_servers: ['fy'] }),
    ).toEqual({ patterns: 'fx__echo fy__*', tools: '3 tools (fx, fy)', resources: 'resources of fy' });
  });
  it('a resource-only role and a locked one', () => {
    expect(grantText({ patterns: ['fx__'], tools: [], resource_servers: ['fx'] })).toEqual({
      patterns: 'fx__',
      tools: 'no tools',
      resources: 'resources of fx',
    });
    expect(grantText({ patterns: [], tools: [], resource_servers: [] })).toEqual({
      patterns: 'nothing (locked out)',
      tools: 'no tools',
      resources: 'no resources',
    });
    expect(grantText({ patterns: ['*'], tools: ['switchboard__health_snapshot'], resource_servers: ['fx', 'fy'] }).tools).toBe(
      '1 tool (switchboard)',
    );
  });
});
