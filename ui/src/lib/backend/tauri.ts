// The desktop app's backend: the only module that imports @tauri-apps. The shell hands the
// webview the gateway's URL and an in-memory token; everything else is the HTTP client.

import { invoke } from '@tauri-apps/api/core';
import { GatewayClient } from './http';

export async function tauriClient(): Promise<GatewayClient> {
  const cred = await invoke<{ url: string; token: string }>('dashboard_credential');
  return new GatewayClient(cred.url.replace(/\/+$/, ''), cred.token);
}
