// First dashboard: servers, clients, projects and live events, refreshed on every hub event.
const $ = (sel) => document.querySelector(sel);
const cell = (text, cls) => { const td = document.createElement('td'); td.textContent = text ?? ''; if (cls) td.className = cls; return td; };

function rows(table, items, render) {
  const body = $(table + ' tbody');
  body.replaceChildren(...items.map((it) => { const tr = document.createElement('tr'); tr.append(...render(it)); return tr; }));
}

async function refresh() {
  const status = await window.backend.invoke('status');
  if (!status.running) { $('#status').textContent = 'Gateway down: ' + (status.error || ''); return; }
  const snap = await window.backend.invoke('snapshot');
  const h = snap.health;
  $('#status').textContent = `${status.url} · ${h.servers_running}/${h.servers_total} servers running`;
  rows('#servers', h.servers, (s) => [cell(s.name), cell(s.state, s.state), cell(s.tools), cell(s.restarts), cell(s.last_error)]);
  rows('#clients', snap.clients, (c) => {
    const btn = document.createElement('button');
    btn.textContent = 'Unpair';
    btn.onclick = async () => { if (confirm(`Unpair ${c.name}?`)) { await window.backend.invoke('unpair', { name: c.name }); refresh(); } };
    const td = document.createElement('td'); td.append(btn);
    return [cell(c.name), cell(c.role), cell(c.last_seen_ms ? new Date(c.last_seen_ms).toLocaleString() : 'never'), td];
  });
  rows('#projects', snap.projects, (p) => [cell(p.name), cell(p.online ? 'online' : 'offline', p.online ? 'online' : ''), cell(p.sockets), cell(p.path)]);
}

let timer;
function showCode(code, seconds, url) {
  $('#pairing').hidden = false; $('#code').textContent = code; $('#pair-url').textContent = 'POST ' + url;
  let left = seconds; $('#countdown').textContent = left;
  clearInterval(timer);
  timer = setInterval(() => { left -= 1; $('#countdown').textContent = Math.max(left, 0); if (left <= 0) { clearInterval(timer); $('#pairing').hidden = true; } }, 1000);
}

$('#pair').onclick = async () => { const r = await window.backend.invoke('pair_code', {}); showCode(r.code, r.expires_in_s, r.pair_url); };
window.backend.onPairCode(async (code) => { const s = await window.backend.invoke('status'); showCode(code, 120, s.url + '/pair'); });
window.backend.onHub((ev) => {
  const li = document.createElement('li');
  li.textContent = `${ev.type} ${ev.server || ev.name || ev.tool || ev.path || ''}`;
  $('#events').prepend(li);
  while ($('#events').children.length > 100) $('#events').lastChild.remove();
  refresh();
});
refresh();
