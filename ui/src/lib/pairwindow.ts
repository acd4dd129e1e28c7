// What the desktop app's pairing window shows, from the shell's answer and the clock.
import type { PairCodeView } from './types';

export type PairShown =
  | { kind: 'none' }
  | { kind: 'pending'; code: string; left_s: number; clock: string; fraction: number; pair_url: string }
  | { kind: 'used'; code: string; by: string }
  | { kind: 'expired'; code: string };

/** `m:ss` for a number of seconds. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/**
 * The view at `now` of `view`, fetched at `fetchedAt` (both ms): the time left counts down
 * from the shell's answer, so the page's clock and the gateway's never have to agree.
 */
export function pairShown(view: PairCodeView | null, fetchedAt: number, now: number): PairShown {
  if (!view) return { kind: 'none' };
  if (view.state === 'used') return { kind: 'used', code: view.code, by: view.by };
  if (view.state === 'gone') return { kind: 'expired', code: view.code };
  const leftMs = view.left_ms - Math.max(0, now - fetchedAt);
  if (leftMs <= 0) return { kind: 'expired', code: view.code };
  const left_s = Math.ceil(leftMs / 1000);
  return {
    kind: 'pending',
    code: view.code,
    left_s,
    clock: clock(leftMs / 1000),
    fraction: Math.min(1, leftMs / (view.ttl_s * 1000)),
    pair_url: view.pair_url,
  };
}
