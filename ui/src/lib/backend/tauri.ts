// The desktop app's backend: the only module that imports @tauri-apps. The shell hands the
// webview the gateway's URL and an in-memory token; everything else is the HTTP client.

import { invoke } from '@tauri-apps/api/core';
import { GatewayClient } from './http';

export async function tauriClient(): Promise<GatewayClient> {
  const cred = await invoke<{ url: string; token: string }>('dashboard_credential');
  return new GatewayClient(cred.url.replace(/\/+$/, ''), cred.token);
}

/**
 * The tray's Pair New Client… issues a code and tells the window: event `pair-code` with the
 * code, or `{code, expires_in_s}` (without a lifetime the gateway's default, 120 s, is shown).
 */
export async function onTrayPairCode(cb: (code: string, expiresInS: number) => void): Promise<void> {
  const { listen } = await import('@tauri-apps/api/event');
  await listen<string | { code: string; expires_in_s?: number }>('pair-code', (e) => {
    const p = e.payload;
    if (typeof p === 'string') cb(p, 120);
    else cb(p.code, p.expires_in_s ?? 120);
  });
}
