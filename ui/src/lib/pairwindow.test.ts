import { describe, expect, it } from 'vitest';
import { clock, pairShown } from './pairwindow';

const base = { code: '042917', pair_url: 'http://127.0.0.1:11391/pair', ttl_s: 120 };

describe('pairing window', () => {
  it('formats the countdown as m:ss, rounding up', () => {
    expect(clock(120)).toBe('2:00');
    expect(clock(119.2)).toBe('2:00');
    expect(clock(61)).toBe('1:01');
    expect(clock(9)).toBe('0:09');
    expect(clock(0)).toBe('0:00');
    expect(clock(-3)).toBe('0:00');
  });

  it('counts down from the time the answer came', () => {
    const view = { ...base, state: 'pending' as const, left_ms: 90_000 };
    const at = pairShown(view, 1_000, 1_000);
    expect(at).toMatchObject({ kind: 'pending', code: '042917', left_s: 90, clock: '1:30' });
    expect(at.kind === 'pending' && at.fraction).toBeCloseTo(0.75);
    expect(pairShown(view, 1_000, 31_000)).toMatchObject({ kind: 'pending', left_s: 60, clock: '1:00' });
    // a clock that went backwards does not add time
    expect(pairShown(view, 1_000, 0)).toMatchObject({ left_s: 90 });
  });

  it('turns expired when the time is up, even before the shell says so', () => {
    const view = { ...base, state: 'pending' as const, left_ms: 2_000 };
    expect(pairShown(view, 0, 2_000)).toEqual({ kind: 'expired', code: '042917' });
    expect(pairShown({ ...base, state: 'gone' }, 0, 0)).toEqual({ kind: 'expired', code: '042917' });
  });

  it('says who used the code, and when there is none', () => {
    expect(pairShown({ ...base, state: 'used', by: 'cursor-2' }, 0, 0)).toEqual({
      kind: 'used',
      code: '042917',
      by: 'cursor-2',
    });
    expect(pairShown(null, 0, 0)).toEqual({ kind: 'none' });
  });
});
