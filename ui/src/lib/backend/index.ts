// The backend seam: the rest of the UI gets a GatewayClient from here and never knows
// whether it runs in a browser tab or in the desktop app.

import { GatewayClient, ApiError } from './http';
import type { PairResult } from '../types';

export { GatewayClient, ApiError } from './http';

/** Where the browser keeps its token: this tab only, gone when the tab closes. */
const TOKEN_KEY = 'switchboard.token';

export function inTauri(): boolean {
  return typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window;
}

/** A client if this page already has a credential (desktop app, or paired earlier in this tab). */
export async function existingClient(): Promise<GatewayClient | null> {
  if (inTauri()) {
    const { tauriClient } = await import('./tauri');
    return tauriClient();
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? new GatewayClient('', token) : null;
}

/** Trades a pairing code for this tab's token. */
export async function pairBrowser(code: string, name: string): Promise<GatewayClient> {
  const resp = await fetch('/pair', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ code: code.trim(), name: name.trim() || 'dashboard' }),
  });
  const body = (await resp.json().catch(() => null)) as (PairResult & { error?: { code: string; message: string } }) | null;
  if (!resp.ok || !body?.token) {
    throw new ApiError(resp.status, body?.error?.code ?? 'pair_failed', body?.error?.message ?? `pairing failed (${resp.status})`);
  }
  sessionStorage.setItem(TOKEN_KEY, body.token);
  return new GatewayClient('', body.token);
}

/** Forgets this tab's token (it was revoked, or the person signs out). */
export function forgetCredential(): void {
  if (!inTauri()) sessionStorage.removeItem(TOKEN_KEY);
}

/** Whether this page is the desktop app's small pairing window (not the dashboard). */
export async function isPairWindow(): Promise<boolean> {
  if (!inTauri()) return false;
  const { windowLabel } = await import('./tauri');
  return (await windowLabel()) === 'pair';
}

/** Starts an OAuth login to a remote server and opens its authorization page: in the desktop
 * app the app does it (the system browser, then a notification); in a browser tab the gateway
 * hands back the URL and a new tab opens it. The callback goes to the gateway either way. */
export async function logIn(client: GatewayClient, server: string): Promise<void> {
  if (inTauri()) {
    const { logIn: appLogIn } = await import('./tauri');
    return appLogIn(server);
  }
  const r = await client.post<{ authorization_url: string }>(`/api/servers/${encodeURIComponent(server)}/login`);
  // not 'noopener': with it the handle is null even when the tab opened, and a blocked one
  // could not be told apart; the new tab loses its way back here at once instead
  const tab = window.open(r.authorization_url, '_blank');
  if (!tab) {
    throw new ApiError(0, 'popup_blocked', `the browser blocked the login window; open ${r.authorization_url}`);
  }
  tab.opener = null;
}

/** The elicitation this page is the desktop app's small window of (`elicit-<id>`), if it is one. */
export async function elicitWindowId(): Promise<string | null> {
  if (!inTauri()) return null;
  const { windowLabel } = await import('./tauri');
  const label = await windowLabel();
  return label.startsWith('elicit-') ? label.slice('elicit-'.length) : null;
}

/**
 * Opens a URL-mode elicitation's page, after the person agreed: in the desktop app the shell
 * opens the server's URL with the system opener; in a browser, a new tab without access back.
 */
export async function openElicitationUrl(id: string, url: string): Promise<void> {
  if (inTauri()) {
    const { openElicitationUrl: open } = await import('./tauri');
    return open(id);
  }
  const w = window.open(url, '_blank', 'noopener,noreferrer');
  // with noopener the handle is null even when it opened; nothing more to know
  void w;
}

/** Closes this window (an elicitation window, once answered). */
export async function closeThisWindow(): Promise<void> {
  if (!inTauri()) return;
  const { closeWindow } = await import('./tauri');
  await closeWindow();
}
