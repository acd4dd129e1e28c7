// The backend seam of this first dashboard: every call to the app goes through here.
// In the desktop app it uses Tauri commands and events (no token needed in-process).
window.backend = {
  invoke: (cmd, args) => window.__TAURI__.core.invoke(cmd, args),
  onHub: (fn) => window.__TAURI__.event.listen('hub', (e) => fn(e.payload)),
  onPairCode: (fn) => window.__TAURI__.event.listen('pair-code', (e) => fn(e.payload)),
};
