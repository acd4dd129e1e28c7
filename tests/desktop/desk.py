"""What the desktop test (smoke.py) and the desktop memory bench (bench.py) share: waiting,
the app's tray menu over D-Bus (dbusmenu), its processes in /proc, and its X windows."""

import json
import re
import subprocess
import time
from pathlib import Path


def wait(what: str, pred, timeout: float = 15.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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

    def walk(node, parent):
        ident, props, children = node
        # GTK mnemonics: "_x" marks x, "__" is a literal "_" (muda writes a label's own "_"
        # so: "web: needs__login" is shown as "web: needs_login")
        label = re.sub(r"_(_?)", r"\1", props.get("label", {}).get("data") or "")
        if label:
            items.setdefault(label, ident)
            items[f"{parent}/{label}"] = ident
        for c in children:
            walk(c["data"], label)

    walk(data[1], "")
    return items


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (WebKit's web and network processes are children of
    the app; MCP servers too)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def process_name(pid: int) -> str:
    """The program's file name (`?` once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().rsplit("/", 1)[-1]
    except OSError:
        return "?"


def window_hosts(pid: int) -> list[int]:
    """The app's window host (`switchboard-app --window-host`): it runs while a window is open."""
    def is_host(p: int) -> bool:
        try:
            return b"--window-host" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
    return [p for p in process_tree(pid) if is_host(p)]


def web_processes(pid: int) -> list[int]:
    """The app's WebKitWebProcess children: one per open webview, none when no window is open."""
    return [p for p in process_tree(pid) if process_name(p) == "WebKitWebProcess"]


def x_windows(name: str, visible: bool = True) -> list[str]:
    args = ["xdotool", "search"] + (["--onlyvisible"] if visible else []) + ["--name", name]
    return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.split()


def close_window(wid: str) -> None:
    """What a window manager does for the close button: WM_DELETE_WINDOW to the client."""
    from Xlib import X, display, protocol
    d = display.Display()
    w = d.create_resource_object("window", int(wid))
    proto, delete = d.intern_atom("WM_PROTOCOLS"), d.intern_atom("WM_DELETE_WINDOW")
    w.send_event(protocol.event.ClientMessage(window=w, client_type=proto, data=(32, [delete, X.CurrentTime, 0, 0, 0])),
                 event_mask=X.NoEventMask)
    d.flush()
    d.close()


def click(menu, ident: int) -> None:
    busctl("call", menu[0], menu[1], "com.canonical.dbusmenu", "Event", "isvu", str(ident), "clicked", "s", "", "0")
