#!/usr/bin/env python3
"""What the desktop app costs in memory (run by scripts/bench-app inside a private D-Bus
session): the real app under Xvfb with an unlocked gnome-keyring, as scripts/test-desktop
runs it, measured three times: idle after start with the window never opened, with the
dashboard open, and after it was closed again. Each figure is the sum over every process the
app owns (the app and all its descendants: WebKit's web and network processes, MCP servers
if configured), RSS and PSS from /proc/<pid>/smaps_rollup. Every wait is bounded."""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from desk import (click, close_window, find_menu, layout, process_name, process_tree, wait, web_processes,
                  window_hosts, x_windows)


def menu_item(pid: int, label: str):
    """`(menu, id)` of the tray menu's item `label`, or None."""
    menu = find_menu(pid)
    if not menu:
        return None
    ident = layout(menu).get(label)
    return (menu, ident) if ident is not None else None


procs: list[subprocess.Popen] = []


def memory(pid: int) -> list[tuple[int, str, int, int]]:
    """(pid, name, RSS KiB, PSS KiB) of every process the app owns."""
    rows = []
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue  # gone meanwhile
        field = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1))
        rows.append((p, process_name(p), field("Rss"), field("Pss")))
    return rows


def mappings(pid: int, top: int = 8) -> list[tuple[str, int]]:
    """The app process's PSS by what it maps (a library, the binary, the heap), largest first."""
    per: dict[str, int] = {}
    current = "[anon]"
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                current = parts[5].rsplit("/", 1)[-1] if len(parts) > 5 else "[anon]"
            elif line.startswith("Pss:"):
                per[current] = per.get(current, 0) + int(line.split()[1])
    except OSError:
        return []
    return sorted(per.items(), key=lambda kv: -kv[1])[:top]


def report(phase: str, rows) -> tuple[float, float]:
    rss = sum(r[2] for r in rows) / 1024
    pss = sum(r[3] for r in rows) / 1024
    print(f"\n{phase}: {len(rows)} process(es), RSS {rss:.1f} MiB, PSS {pss:.1f} MiB")
    for p, n, r, s in sorted(rows, key=lambda r: -r[3]):
        print(f"  {p:>7}  {n:<24} RSS {r / 1024:7.1f} MiB  PSS {s / 1024:7.1f} MiB")
    return rss, pss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", default=os.environ.get("SWITCHBOARD_APP_BIN"))
    ap.add_argument("--settle", type=float, default=8.0, help="seconds to let each phase settle before measuring")
    ap.add_argument("--fixture", help="a stdio MCP server to run twice (e.g. switchboard-fixture); none by default")
    ap.add_argument("--screenshot", help="a PNG of the screen with the dashboard open, to look at")
    args = ap.parse_args()
    app_bin = args.app
    if not app_bin or not Path(app_bin).is_file():
        raise SystemExit(f"no app binary {app_bin!r}: install the .deb or pass --app")
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    config = ""
    if args.fixture:
        config = "".join(f'[[servers]]\nname = "fx{i}"\ncommand = "{args.fixture}"\n\n' for i in (1, 2))
    (tmp / "config.toml").write_text(config)
    keyring = subprocess.Popen(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "XDG_DATA_HOME": str(tmp / "keyrings")})
    keyring.stdin.write(b"bench-keyring")
    keyring.stdin.close()
    procs.append(keyring)
    procs.append(subprocess.Popen(["Xvfb", ":94", "-screen", "0", "1280x800x24"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    os.environ["DISPLAY"] = ":94"
    wait("the X server", lambda: Path("/tmp/.X11-unix/X94").exists())
    procs.append(subprocess.Popen(["dunst"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "home").mkdir()
    env = {**os.environ, "HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
           "SWITCHBOARD_LISTEN": f"127.0.0.1:{port}", "SWITCHBOARD_DATA_DIR": str(tmp / "data"),
           "SWITCHBOARD_CONFIG": str(tmp / "config.toml"), "SWITCHBOARD_LOG": "warn"}
    app = subprocess.Popen([app_bin], env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "app.log").open("w"))
    procs.append(app)

    def healthy():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    print(f"app: {app_bin} (pid {app.pid}); {'two MCP servers: ' + args.fixture if args.fixture else 'no MCP servers'}; "
          f"each phase settles {args.settle:.0f} s")
    wait("the gateway", healthy, timeout=30)
    wait("the tray menu on D-Bus", lambda: find_menu(app.pid), timeout=30)
    time.sleep(args.settle)
    assert not web_processes(app.pid), "a web process before the window was opened"
    results = {"never opened": report("idle, window never opened", memory(app.pid))}

    click(*wait("Open Dashboard", lambda: menu_item(app.pid, "Open Dashboard")))
    wid = wait("the dashboard window", lambda: (x_windows("^Switchboard$") or [None])[0], timeout=20)
    wait("its web process", lambda: web_processes(app.pid), timeout=20)
    time.sleep(args.settle)  # the page loads, reads its snapshots and goes live
    results["open"] = report("dashboard open", memory(app.pid))
    if args.screenshot:
        from PIL import ImageGrab
        subprocess.run(["xdotool", "windowraise", wid], timeout=10)
        ImageGrab.grab(xdisplay=env["DISPLAY"]).save(args.screenshot)
        print(f"(the screen with the dashboard open: {args.screenshot})")

    def closed():
        if not x_windows("^Switchboard$") and not web_processes(app.pid) and not window_hosts(app.pid):
            return True
        if x_windows("^Switchboard$"):
            close_window(wid)
        return False
    t0 = time.monotonic()
    wait("the window, its host and web process gone", closed, timeout=30, every=0.5)
    print(f"\n(the window host and its web process ended {time.monotonic() - t0:.1f} s after the close request)")
    time.sleep(args.settle)
    results["closed"] = report("dashboard closed again", memory(app.pid))
    print("  the app process's largest mappings now (PSS):")
    for what, kib in mappings(app.pid):
        print(f"    {kib / 1024:6.1f} MiB  {what}")

    print("\nsummary (whole app, every process it owns):")
    for phase, (rss, pss) in results.items():
        print(f"  window {phase:<13} RSS {rss:6.1f} MiB   PSS {pss:6.1f} MiB")
    pss_closed = results["closed"][1]
    print(f"  target: PSS ≤ 80 MB with the window closed: {'met' if pss_closed * 1.048576 <= 80 else 'MISSED'} "
          f"({pss_closed * 1.048576:.1f} MB)")
    click(*wait("Quit", lambda: menu_item(app.pid, "Quit")))
    app.wait(timeout=20)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
