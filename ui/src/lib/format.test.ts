import { describe, expect, it } from 'vitest';
import { ago, bytes, duration, fraction, payloadText, percent, percentile, serverState, wakeup } from './format';

describe('format', () => {
  it('durations read naturally at every scale', () => {
    expect(duration(0)).toBe('0 ms');
    expect(duration(850)).toBe('850 ms');
    expect(duration(4200)).toBe('4.2 s');
    expect(duration(42_000)).toBe('42 s');
    expect(duration(185_000)).toBe('3 min 05 s');
    expect(duration(2 * 3600_000 + 7 * 60_000)).toBe('2 h 07 min');
    expect(duration(3 * 86400_000 + 4 * 3600_000)).toBe('3 d 4 h');
    expect(duration(null)).toBe('–');
    expect(duration(-5)).toBe('–');
  });
  it('server states in words', () => {
    expect(serverState('idle')).toBe('idle (on demand)');
    expect(serverState('needs_login')).toBe('needs_login');
    expect(serverState('running')).toBe('running');
  });
  it('wake-ups in words', () => {
    expect(wakeup({ why: 'clock', slept_s: 3600, reconnecting: ['far'] })).toBe('Woke after 1 h 00 min asleep: far reconnecting');
    expect(wakeup({ why: 'logind', slept_s: 0, reconnecting: ['a', 'b'] })).toBe('Woke from sleep: a, b reconnecting');
    expect(wakeup({ why: 'network', slept_s: 0, reconnecting: [] })).toBe('Network back: no server was waiting to reconnect');
  });

  it('ago', () => {
    expect(ago(null, 1000)).toBe('never');
    expect(ago(1000, 3000)).toBe('just now');
    expect(ago(0, 42_000)).toBe('42 s ago');
    expect(ago(0, 185_000)).toBe('3 min ago');
  });
  it('sizes and percentages', () => {
    expect(bytes(512)).toBe('512 B');
    expect(bytes(16 * 1024)).toBe('16.0 KB');
    expect(bytes(3 * 1024 * 1024)).toBe('3.0 MB');
    expect(percent(0)).toBe('0 %');
    expect(percent(0.025)).toBe('2.5 %');
    expect(percent(0.5)).toBe('50 %');
    expect(percent(NaN)).toBe('–');
  });
  it('progress fractions need a positive total and are clamped', () => {
    expect(fraction(2, 4)).toBe(0.5);
    expect(fraction(5, 4)).toBe(1);
    expect(fraction(2, null)).toBeNull();
    expect(fraction(2, 0)).toBeNull();
    expect(fraction(null, 4)).toBeNull();
  });
  it('percentiles by nearest rank', () => {
    expect(percentile([], 0.5)).toBeNull();
    expect(percentile([5, 1, 3], 0.5)).toBe(3);
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(hundred, 0.99)).toBe(99);
    expect(percentile(hundred, 0)).toBe(1);
    expect(percentile(hundred, 1)).toBe(100);
  });
  it('a cut payload says how big it was', () => {
    expect(payloadText({ json: '{"a":1}', bytes: 7, truncated: false })).toBe('{"a":1}');
    expect(payloadText({ json: '{"a":', bytes: 20480, truncated: true })).toContain('20.0 KB in all');
    expect(payloadText(undefined)).toBe('');
  });
});
