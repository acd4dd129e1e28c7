// The desktop app's backend: the only module that imports @tauri-apps. The shell hands the
// webview the gateway's URL and an in-memory token; everything else is the HTTP client.
// The small pairing window talks to the shell only (its code and a new one).

import { invoke } from '@tauri-apps/api/core';
import { GatewayClient } from './http';
import type { PairCodeView } from '../types';

export async function tauriClient(): Promise<GatewayClient> {
  const cred = await invoke<{ url: string; token: string }>('dashboard_credential');
  return new GatewayClient(cred.url.replace(/\/+$/, ''), cred.token);
}

/** This webview's window label: `main` (the dashboard) or `pair` (the pairing window). */
export async function windowLabel(): Promise<string> {
  const { getCurrentWindow } = await import('@tauri-apps/api/window');
  return getCurrentWindow().label;
}

/** The code the tray's Pair New Client… issued, with its state now; null before the first. */
export function currentPairCode(): Promise<PairCodeView | null> {
  return invoke<PairCodeView | null>('pair_code');
}

/** Issues a new code, as the tray's Pair New Client… does (the window is told by event). */
export function newPairCode(): Promise<void> {
  return invoke<void>('new_pair_code');
}

/** Calls `cb` whenever the tray or the window issues a new code. */
export async function onPairCodeIssued(cb: () => void): Promise<void> {
  const { getCurrentWebviewWindow } = await import('@tauri-apps/api/webviewWindow');
  await getCurrentWebviewWindow().listen('pair-code', () => cb());
}

/** Closes this window (the pairing window: the app stays in the tray). */
export async function closeWindow(): Promise<void> {
  const { getCurrentWindow } = await import('@tauri-apps/api/window');
  await getCurrentWindow().close();
}

/** The app's own login: it opens the system browser and notifies the outcome. */
export function logIn(server: string): Promise<void> {
  return invoke<void>('log_in', { server });
}

/** Opens the page of URL-mode elicitation `id` with the system opener (the person agreed). */
export function openElicitationUrl(id: string): Promise<void> {
  return invoke<void>('open_elicitation_url', { id });
}
