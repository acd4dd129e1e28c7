"""Shared helpers for the Python SDK end-to-end tests.

Starts a Switchboard gateway (`$SWITCHBOARD_BIN serve`) as a child process on a fresh TOML config
in a temp dir, hands its /mcp URL to the tests, and always stops it (SIGTERM, then SIGKILL).
Tokens live in memory (`[auth] token_store = "memory"`); clients pair for real: a code from
`switchboard pair --data-dir ...`, traded for a bearer token at `POST /pair` (`Gateway.pair`).
Every wait is bounded, so a broken gateway fails a test instead of hanging it. When a test that
used a gateway fails, the gateway's stderr is attached to the report.

Run through scripts/test-clients (it builds the binaries and sets SWITCHBOARD_BIN etc).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CLIENTS_DIR = Path(__file__).resolve().parent.parent

STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0

# The roles every test gateway knows: `default` sees every tool, `reader` two, `locked` none.
ROLES: dict[str, list[str]] = {
    "default": ["*"],
    "reader": ["fixture__echo", "switchboard__health_snapshot"],
    "locked": [],
}

LISTENING_RE = re.compile(r"^Switchboard listening on (http://127\.0\.0\.1:\d+)$")


def _target_dir() -> Path:
    # Same default as scripts/test-clients; the binaries themselves normally come from the env.
    return Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "switchboard" / "target")


def gateway_bin() -> str:
    return os.environ.get("SWITCHBOARD_BIN") or str(_target_dir() / "debug" / "switchboard")


def fixture_bin() -> str:
    return os.environ.get("SWITCHBOARD_FIXTURE_BIN") or str(_target_dir() / "debug" / "switchboard-fixture")


def fixture_server(name: str = "fixture", args: list[str] | None = None) -> dict:
    return {"name": name, "command": fixture_bin(), "args": args or []}


def everything_server() -> dict:
    """server-everything from tests/clients/node_modules, in stdio mode (`dist/index.js stdio`)."""
    entry = CLIENTS_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    return {"name": "everything", "command": shutil.which("node") or "node", "args": [str(entry), "stdio"]}


def _toml_string(value: str) -> str:
    # TOML basic strings accept JSON's escapes (\" \\ \n \t \uXXXX).
    return json.dumps(str(value))


def config_toml(servers: list[dict], roles: dict[str, list[str]] | None = None, default_role: str = "default") -> str:
    blocks = []
    for s in servers:
        args = ", ".join(_toml_string(a) for a in s.get("args", []))
        blocks.append(
            "[[servers]]\n"
            f"name = {_toml_string(s['name'])}\n"
            f"command = {_toml_string(s['command'])}\n"
            f"args = [{args}]\n"
        )
    blocks.append(f'[auth]\ntoken_store = "memory"\ndefault_role = {_toml_string(default_role)}\n')
    role_lines = "".join(
        f"{role} = [{', '.join(_toml_string(t) for t in tools)}]\n" for role, tools in (roles or ROLES).items()
    )
    blocks.append(f"[roles]\n{role_lines}")
    return "\n".join(blocks)


class PairingError(RuntimeError):
    pass


def run_cli(args: list[str], timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Runs `$SWITCHBOARD_BIN <args>` (killed after `timeout`); the exit code is not checked."""
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [gateway_bin(), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@dataclass
class Gateway:
    """A running `switchboard serve`; `stop()` is idempotent."""

    proc: subprocess.Popen
    dir: Path
    log_path: Path
    data_dir: Path
    url: str = ""
    _api_token: str | None = field(default=None, repr=False)
    exit: tuple[int | None, bool] | None = field(default=None)  # (returncode, forced)

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def logs(self, last: int = 200) -> str:
        """The last `last` lines the gateway wrote to stderr."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no gateway log)"
        skipped = f"({len(lines) - last} earlier lines left out)\n" if len(lines) > last else ""
        return skipped + "\n".join(lines[-last:])

    def pairing_code(self, role: str | None = None) -> str:
        """A one-time code from `switchboard pair` (the last line of its stdout). Blocking."""
        args = ["pair", "--data-dir", str(self.data_dir)] + (["--role", role] if role else [])
        res = run_cli(args)
        lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        code = lines[-1] if lines else ""
        if res.returncode != 0 or not re.fullmatch(r"\d{6}", code):
            raise PairingError(
                f"switchboard {' '.join(args)} exited {res.returncode} without a 6-digit code on its last "
                f"stdout line\nstdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return code

    def post_pair(self, body: dict) -> tuple[int, dict | str]:
        """POST /pair with a JSON body; returns (status, JSON body or raw text). Blocking."""
        req = urllib.request.Request(
            f"{self.url}/pair",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as res:
                status, raw = res.status, res.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def pair(self, name: str, role: str | None = None) -> dict:
        """Pairs a client for real (`switchboard pair`, then POST /pair). Returns the /pair answer:
        {"paired", "token", "name" (made unique by the gateway), "role", "client_config"}. Blocking."""
        code = self.pairing_code(role)
        status, body = self.post_pair({"code": code, "name": name})
        if status != 200 or not isinstance(body, dict) or body.get("paired") is not True:
            raise PairingError(f"POST /pair answered {status}: {body}")
        if not re.fullmatch(r"sb_[0-9a-f]{64}", str(body.get("token", ""))):
            raise PairingError(f"unexpected token in the POST /pair answer: {body}")
        return body

    def unpair(self, name: str) -> None:
        """`switchboard unpair <name>`: revokes the client's token and closes its sessions. Blocking."""
        args = ["unpair", name, "--data-dir", str(self.data_dir)]
        res = run_cli(args)
        if res.returncode != 0:
            raise PairingError(f"switchboard {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")

    def api_token(self) -> str:
        """A default-role token for the gateway's HTTP API, paired on first use. Blocking."""
        if self._api_token is None:
            self._api_token = self.pair("switchboard-e2e-py-api")["token"]
        return self._api_token

    def upstream_stderr(self, server: str) -> list[str] | None:
        """The stderr tail the gateway keeps for upstream `server` (`GET /api/servers`), or None
        when the gateway does not expose one (checks that use it are then skipped). Blocking."""
        try:
            req = urllib.request.Request(
                f"{self.url}/api/servers", headers={"Authorization": f"Bearer {self.api_token()}"}
            )
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as res:
                body = json.load(res)
        except (OSError, ValueError, PairingError, subprocess.TimeoutExpired):
            return None
        for s in body.get("servers", []) if isinstance(body, dict) else []:
            if s.get("name") == server and isinstance(s.get("stderr_tail"), list):
                return s["stderr_tail"]
        return None

    def stop(self) -> tuple[int | None, bool]:
        """SIGTERM; SIGKILL after STOP_TIMEOUT_S. Returns (returncode, forced)."""
        if self.exit is None:
            forced = False
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    forced = True
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
            self.exit = (self.proc.returncode, forced)
        return self.exit


# Every gateway started here that is still running. However the test run ends (a failed test
# that skipped its cleanup, an error, SIGTERM from `timeout`), none of them outlives it.
_live: list[subprocess.Popen] = []


def _kill_live() -> None:
    for proc in _live:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
    _live.clear()


atexit.register(_kill_live)
# SIGTERM (what `timeout` sends) would end Python without running atexit handlers: make it
# an ordinary exit, which does.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def start_gateway(servers: list[dict]) -> Gateway:
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-e2e-py-"))
    config = tmp / "config.toml"
    config.write_text(config_toml(servers))
    log_path = tmp / "gateway.stderr.log"
    env = dict(os.environ)
    env.setdefault("SWITCHBOARD_LOG", "info")
    env["NO_COLOR"] = "1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [gateway_bin(), "serve", "--listen", "127.0.0.1:0", "--config", str(config), "--data-dir", str(tmp / "data")],
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
    _live.append(proc)
    gw = Gateway(proc=proc, dir=tmp, log_path=log_path, data_dir=tmp / "data")

    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # Hand over the first line, then keep draining stdout so the gateway never blocks on it.
        assert proc.stdout is not None
        first = True
        for raw in proc.stdout:
            if first:
                lines.put(raw.decode(errors="replace").rstrip("\r\n"))
                first = False
        if first:
            lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(
                f'no "Switchboard listening on http://..." line on stdout within {STARTUP_TIMEOUT_S} s'
            ) from None
        if line is None:
            raise RuntimeError(f"gateway exited (code {proc.wait(timeout=STOP_TIMEOUT_S)}) before it was listening")
        m = LISTENING_RE.match(line.strip())
        if not m:
            raise RuntimeError(f"unexpected first stdout line from the gateway: {line!r}")
        gw.url = m.group(1)
        return gw
    except BaseException as e:
        gw.stop()
        raise RuntimeError(f"{e}\n({gateway_bin()} serve --config {config})\n--- gateway stderr ---\n{gw.logs()}") from e


def cleanup_gateway(gw: Gateway) -> tuple[int | None, bool]:
    result = gw.stop()
    shutil.rmtree(gw.dir, ignore_errors=True)
    return result


@pytest.fixture(scope="module")
def gateway():
    """One gateway per test module, upstreams: switchboard-fixture and server-everything."""
    gw = start_gateway([fixture_server(), everything_server()])
    try:
        yield gw
    finally:
        code, forced = gw.stop()
        if forced:
            print("gateway did not exit within 5 s of SIGTERM; killed it", file=sys.stderr)
        shutil.rmtree(gw.dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        funcargs = getattr(item, "funcargs", {}) or {}
        for value in funcargs.values():
            if isinstance(value, Gateway):
                report.sections.append((f"gateway stderr ({value.mcp_url})", value.logs()))
