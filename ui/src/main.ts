import { mount } from 'svelte';
import './app.css';
import App from './App.svelte';
import { closeThisWindow, elicitWindowId, existingClient, isPairWindow, openElicitationUrl } from './lib/backend';

const target = document.getElementById('app');
if (!target) throw new Error('no #app element');

// The desktop app's small pairing window loads the same page; it shows only the code.
async function start() {
  let elicit: string | null = null;
  if (target && (await isPairWindow().catch(() => false))) {
    const [{ default: PairWindow }, shell] = await Promise.all([
      import('./views/PairWindow.svelte'),
      import('./lib/backend/tauri'),
    ]);
    mount(PairWindow, {
      target,
      props: {
        shell: {
          current: shell.currentPairCode,
          issue: shell.newPairCode,
          onIssued: shell.onPairCodeIssued,
          close: shell.closeWindow,
        },
      },
    });
  } else if (target && (elicit = await elicitWindowId().catch(() => null))) {
    const { default: ElicitWindow } = await import('./views/ElicitWindow.svelte');
    const id = elicit;
    mount(ElicitWindow, {
      target,
      props: {
        id,
        shell: {
          client: async () => {
            const c = await existingClient();
            if (!c) throw new Error('no credential for the gateway');
            return c;
          },
          openUrl: openElicitationUrl,
          close: closeThisWindow,
        },
      },
    });
  } else if (target) {
    mount(App, { target });
  }
}
void start();
