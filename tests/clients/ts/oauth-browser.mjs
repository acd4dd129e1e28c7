// The OAuth tests' "browser", set as $BROWSER: follows the authorization URL it is given,
// redirect by redirect (the test authorization server approves at once), to the callback, and
// appends what it saw to $OAUTH_BROWSER_LOG (one JSON line per visit). $OAUTH_BROWSER_MODE
// changes what it does: "ignore" never follows (a callback that never comes), "wrong-state"
// replaces the state of the callback.
import fs from 'node:fs';

const start = process.argv[2];
const mode = process.env.OAUTH_BROWSER_MODE ?? 'follow';
const logFile = process.env.OAUTH_BROWSER_LOG;
const hops = [];
let status = null;
let body = '';
if (mode !== 'ignore') {
  let url = start;
  for (let i = 0; i < 10; i++) {
    if (mode === 'wrong-state' && url.includes('/oauth/callback')) {
      const u = new URL(url);
      u.searchParams.set('state', 'not-the-state');
      url = u.toString();
    }
    hops.push(url);
    const r = await fetch(url, { redirect: 'manual' });
    status = r.status;
    body = await r.text();
    const next = r.headers.get('location');
    if (r.status >= 300 && r.status < 400 && next) url = new URL(next, url).toString();
    else break;
  }
}
if (logFile) fs.appendFileSync(logFile, JSON.stringify({ start, mode, hops, status, body: body.slice(0, 500) }) + '\n');
