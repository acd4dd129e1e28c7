import { mount } from 'svelte';
import './app.css';
import App from './App.svelte';
import { isPairWindow } from './lib/backend';

const target = document.getElementById('app');
if (!target) throw new Error('no #app element');

// The desktop app's small pairing window loads the same page; it shows only the code.
async function start() {
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
  } else if (target) {
    mount(App, { target });
  }
}
void start();
