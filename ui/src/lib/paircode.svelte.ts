// A pairing code the Clients view shows (issued from the page), with its expiry.
import type { PairCode } from './types';

export const pending: { code: PairCode | null; expiresAt: number } = $state({ code: null, expiresAt: 0 });

export function show(code: PairCode): void {
  pending.code = code;
  pending.expiresAt = Date.now() + code.expires_in_s * 1000;
}

export function clear(): void {
  pending.code = null;
}
