#!/usr/bin/env python3
"""Desktop end-to-end test of the real Switchboard app (run by scripts/test-desktop inside a
private D-Bus session). Starts gnome-keyring (unlocked), Xvfb and dunst, records the
notification calls with dbus-monitor, launches the app, and drives its tray menu over D-Bus
(com.canonical.dbusmenu) the way a tray host would: Pair creates a code and a notification,
the code pairs a client for real, Unpair (tray) revokes it, a killed server gives one crash
notification, Quit exits cleanly with no child left. Every wait is bounded."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

APP = os.environ["SWITCHBOARD_APP_BIN"]
FIXTURE = os.environ["SWITCHBOARD_FIXTURE_BIN"]
SWITCHBOARD = os.environ["SWITCHBOARD_BIN"]
def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = int(os.environ.get("SWITCHBOARD_TEST_PORT", "0")) or free_port()
BASE = f"http://127.0.0.1:{PORT}"
procs: list[subprocess.Popen] = []
failures = 0
passed = 0


def bg(args, **kw) -> subprocess.Popen:
    p = subprocess.Popen(args, stdout=kw.pop("stdout", subprocess.DEVNULL), stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
    procs.append(p)
    return p


def wait(what: str, pred, timeout: float = 15.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http(method: str, path: str, body=None, token=None):
    req = urllib.request.Request(BASE + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, None


def busctl(*args) -> str:
    return subprocess.run(["busctl", "--user", "--timeout=5", *args], capture_output=True, text=True, timeout=10).stdout


MENU_PATH = "/org/ayatana/NotificationItem/tray_icon_tray_app_main/Menu"


def find_menu(pid: int) -> tuple[str, str] | None:
    """The app's exported tray menu (libayatana-appindicator's dbusmenu at a path derived from
    the tray id): the connection of the app's process that answers GetLayout there."""
    for line in busctl("list", "--no-pager").splitlines()[1:]:
        cols = line.split()
        if len(cols) < 2 or not cols[0].startswith(":") or cols[1] != str(pid):
            continue
        probe = subprocess.run(["busctl", "--user", "--timeout=2", "call", cols[0], MENU_PATH,
                                "com.canonical.dbusmenu", "GetLayout", "iias", "0", "0", "0"],
                               capture_output=True, text=True, timeout=10)
        if probe.returncode == 0:
            return cols[0], MENU_PATH
    return None


def layout(menu) -> dict[str, int]:
    """Every menu item's label → id (submenus included)."""
    out = busctl("--json=short", "call", menu[0], menu[1], "com.canonical.dbusmenu", "GetLayout", "iias", "0", "10", "0")
    data = json.loads(out)["data"]
    items: dict[str, int] = {}

    def walk(node):
        ident, props, children = node
        label = props.get("label", {}).get("data")
        if label:
            items[label.replace("_", "")] = ident
        for c in children:
            walk(c["data"])

    walk(data[1])
    return items


def item(pid: int, label_prefix: str):
    """Finds the app's menu now (it is re-exported when rebuilt) and the item whose label
    starts with `label_prefix`; `(menu, id)` or None."""
    menu = find_menu(pid)
    if not menu:
        return None
    for label, ident in layout(menu).items():
        if label.startswith(label_prefix):
            return menu, ident
    return None


def click(menu, ident: int) -> None:
    busctl("call", menu[0], menu[1], "com.canonical.dbusmenu", "Event", "isvu", str(ident), "clicked", "s", "", "0")


def notifications(log: Path) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    # each Notify call: app name, replaces id, icon, summary, body
    return re.findall(r'member=Notify.*?string "Switchboard"\s+uint32 \d+\s+string "[^"]*"\s+string "([^"]*)"', text, re.S)


def ws_connect(path: str):
    """A minimal WebSocket client (stdlib only): the handshake, then masked text frames."""
    import base64
    import socket
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def ws_send(sock, text: str) -> None:
    import struct
    data, mask = text.encode(), os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def ws_recv(sock) -> dict:
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "socket closed"
            buf += chunk
        return buf
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    return json.loads(exact(n))


def envelope(kind: str, payload: dict) -> str:
    return json.dumps({"version": "1.0", "type": kind, "payload": payload,
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})


def mcp_call(token: str, tool: str, arguments: dict, timeout: float) -> str:
    """initialize + initialized + tools/call over Streamable HTTP; the SSE body as text."""
    def post(body, session=None):
        req = urllib.request.Request(BASE + "/mcp", method="POST", data=json.dumps(body).encode())
        req.add_header("content-type", "application/json")
        req.add_header("accept", "application/json, text/event-stream")
        req.add_header("authorization", f"Bearer {token}")
        if session:
            req.add_header("mcp-session-id", session)
            req.add_header("mcp-protocol-version", "2025-11-25")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.headers.get("mcp-session-id"), r.read().decode()
    session, _ = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "desktop", "version": "1"}}})
    post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    return post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": tool, "arguments": arguments}}, session)[1]


def check(name: str, fn) -> None:
    global failures, passed
    t0 = time.monotonic()
    try:
        fn()
        passed += 1
        print(f"ok - {name} ({time.monotonic() - t0:.1f} s)")
    except Exception as e:  # noqa: BLE001 - reported
        failures += 1
        print(f"not ok - {name}: {e!r}")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-desktop-"))
    (tmp / "config.toml").write_text(f'[[servers]]\nname = "fx"\ncommand = "{FIXTURE}"\n')
    keyring = subprocess.Popen(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "XDG_DATA_HOME": str(tmp / "keyrings")})
    keyring.stdin.write(b"desktop-test-keyring")
    keyring.stdin.close()
    procs.append(keyring)
    bg(["Xvfb", ":93", "-screen", "0", "1280x800x24"])
    os.environ["DISPLAY"] = ":93"
    wait("the X server", lambda: Path("/tmp/.X11-unix/X93").exists())
    bg(["dunst"])
    log = tmp / "notify.log"
    bg(["dbus-monitor", "--session", "interface='org.freedesktop.Notifications',member='Notify'"], stdout=log.open("w"))
    wait("the notification service", lambda: "org.freedesktop.Notifications" in busctl("list", "--no-pager"))

    # a throwaway home: Start at Login writes $HOME/.config/autostart
    (tmp / "home").mkdir()
    env = {**os.environ, "HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
           "SWITCHBOARD_LISTEN": f"127.0.0.1:{PORT}", "SWITCHBOARD_DATA_DIR": str(tmp / "data"),
           "SWITCHBOARD_CONFIG": str(tmp / "config.toml"), "SWITCHBOARD_LOG": "info"}
    t0 = time.monotonic()
    app = subprocess.Popen([APP], env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "app.log").open("w"))
    procs.append(app)
    state = {}

    def started():
        wait("the gateway", lambda: http("GET", "/healthz")[0] == 200, timeout=30, every=0.02)
        state["gateway_s"] = time.monotonic() - t0
        state["menu"] = wait("the tray menu on D-Bus", lambda: find_menu(app.pid), timeout=30)
        time.sleep(2)
        state["rss_kib"] = next(int(l.split()[1]) for l in Path(f"/proc/{app.pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
        items = layout(state["menu"])
        for label in ["Open Dashboard", "Pair New Client…", "Paired Clients", "Servers", "Pause Notifications",
                      "Start at Login", "Quit"]:
            assert label in items, f"{label!r} not in the tray menu {sorted(items)}"
    check("the app starts: gateway answers, tray menu published on D-Bus", started)
    if "menu" not in state:
        return finish(app, tmp)

    def pair():
        click(*wait("the Pair item", lambda: item(app.pid, "Pair New Client")))
        summary = wait("a pairing notification", lambda: next((s for s in notifications(log) if s.startswith("Pairing code")), None))
        code = summary.split()[-1]
        status, body = http("POST", "/pair", {"code": code, "name": "desktop-test"})
        assert status == 200, (status, body)
        state["token"] = body["token"]
        status, clients = http("GET", "/api/clients", token=state["token"])
        assert status == 200 and [c["name"] for c in clients] == ["desktop-test"], clients
    check("Pair (tray) creates a code and a notification; the code pairs a client", pair)

    def unpair():
        click(*wait("the client in the tray menu", lambda: item(app.pid, "desktop-test")))
        wait("the token revoked", lambda: http("GET", "/api/clients", token=state["token"])[0] == 401)
    if "token" in state:
        check("Unpair (tray) revokes the token", unpair)

    def crash():
        before = len([s for s in notifications(log) if s.startswith("Pairing code")])
        click(*wait("the Pair item", lambda: item(app.pid, "Pair New Client")))
        codes = wait("a second pairing notification",
                     lambda: [s for s in notifications(log) if s.startswith("Pairing code")][before:])
        status, body = http("POST", "/pair", {"code": codes[0].split()[-1], "name": "crash-test"})
        assert status == 200, (status, body)
        token = body["token"]
        _, servers = http("GET", "/api/servers", token=token)
        pid = next(s["pid"] for s in servers["servers"] if s["name"] == "fx")
        os.kill(pid, signal.SIGKILL)
        wait("a crash notification", lambda: any("'fx' crashed" in s for s in notifications(log)))
        time.sleep(1)
        assert sum("'fx' crashed" in s for s in notifications(log)) == 1, notifications(log)
        state["fixture_pid"] = lambda: next(s["pid"] for s in http("GET", "/api/servers", token=token)[1]["servers"] if s["name"] == "fx")
        wait("the server back", lambda: state["fixture_pid"]())
        state["child"] = state["fixture_pid"]()
        state["token2"] = token
    check("a killed server gives one crash notification and comes back", crash)

    def slow_call():
        body = mcp_call(state["token2"], "fx__slow", {"steps": 15, "step_ms": 2000}, timeout=90)
        assert "done after 15 steps" in body, body[-500:]
        running = wait("a progress notification", lambda: [s for s in notifications(log) if s == "fx__slow is running"])
        finished = wait("the completion notification", lambda: [s for s in notifications(log) if s == "fx__slow finished"])
        assert len(finished) == 1, finished
        print(f"# 30 s call: {len(running)} progress notification update(s), 1 completion")
    if "token2" in state:
        check("a 30 s call shows progress and completion notifications", slow_call)

    def reconnect_storm():
        project = Path.home() / ".cache" / "switchboard" / "desktop-test-project"
        project.mkdir(parents=True, exist_ok=True)
        info = {"path": str(project.resolve()), "name": "storm-project", "db_path": str(project / "p.db"),
                "mcp_connected": True, "is_online": True}
        t0 = time.monotonic()
        for _ in range(50):
            sock = ws_connect("/ws/mcp")
            ws_send(sock, envelope("hello", {"entity_type": "mcp_server", "capabilities": []}))
            assert ws_recv(sock)["type"] == "welcome"
            ws_send(sock, envelope("register", info))
            assert ws_recv(sock)["payload"] == {"success": True}
            sock.close()
            time.sleep(0.05)
        assert time.monotonic() - t0 < 60
        wait("an offline notification", lambda: any(s == "Project 'storm-project' went offline" for s in notifications(log)))
        time.sleep(2)
        offline = [s for s in notifications(log) if s == "Project 'storm-project' went offline"]
        assert len(offline) == 1, f"{len(offline)} offline notifications for 50 reconnects"
    check("50 reconnects of a registered project in a minute give one offline notification", reconnect_storm)

    def connect_via_keychain():
        env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_TOKEN"}
        url = BASE + "/mcp"
        paired = subprocess.run([SWITCHBOARD, "connect", "--pair", "--name", "stdio-bridge", "--url", url,
                                 "--data-dir", str(tmp / "data")], env=env, capture_output=True, text=True, timeout=30)
        assert paired.returncode == 0, paired.stderr
        assert "OS keychain" in paired.stderr, paired.stderr
        bridge = subprocess.Popen([SWITCHBOARD, "connect", "--url", url], env={**env, "SWITCHBOARD_LOG": "warn"},
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(bridge)
        def send(msg):
            bridge.stdin.write(json.dumps(msg) + "\n")
            bridge.stdin.flush()
        def reply(ident):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                line = bridge.stdout.readline()
                assert line, "bridge closed: " + bridge.stderr.read()
                msg = json.loads(line)
                if msg.get("id") == ident:
                    return msg
            raise AssertionError("no reply")
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "stdio", "version": "1"}}})
        assert reply(1)["result"]["serverInfo"]["name"] == "switchboard"
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fx__echo", "arguments": {"text": "from the keychain"}}})
        assert reply(2)["result"]["content"][0]["text"] == "from the keychain"
        bridge.stdin.close()
        assert bridge.wait(timeout=15) == 0
    check("switchboard connect: --pair keeps the token in the OS keychain; the bridge reaches a tool with it", connect_via_keychain)

    def start_at_login():
        entry = tmp / "home" / ".config" / "autostart" / "Switchboard.desktop"
        assert not entry.exists()
        click(*wait("the Start at Login item", lambda: item(app.pid, "Start at Login")))
        wait("the autostart entry", entry.exists)
        assert f"Exec={APP}" in entry.read_text() or APP in entry.read_text(), entry.read_text()
        click(*wait("the Start at Login item", lambda: item(app.pid, "Start at Login")))
        wait("the autostart entry removed", lambda: not entry.exists())
    check("Start at Login (tray) adds and removes the autostart entry", start_at_login)

    def quit_():
        click(*wait("the Quit item", lambda: item(app.pid, "Quit")))
        code = app.wait(timeout=15)
        assert code == 0, f"exit code {code}"
        if "child" in state:
            assert not Path(f"/proc/{state['child']}").exists(), "the MCP server outlived the app"
        assert http("GET", "/healthz")[0] is None, "the gateway still answers"
    check("Quit (tray) exits cleanly and leaves no child process", quit_)
    return finish(app, tmp, state)


def finish(app, tmp, state=None) -> int:
    if app.poll() is None:
        app.kill()
    for p in procs:
        if p.poll() is None:
            p.terminate()
    if state and "gateway_s" in state:
        # the tray is created right after the gateway opens, in the same setup step
        print(f"# cold start to gateway answering (tray created in the same step): {state['gateway_s']:.2f} s")
    if state and "rss_kib" in state:
        print(f"# app RSS, idle with one MCP server: {state['rss_kib'] / 1024:.1f} MiB")
    if failures:
        print((tmp / "app.log").read_text(errors="replace")[-4000:])
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
