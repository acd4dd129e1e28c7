"""End-to-end: the official Python MCP SDK client (Streamable HTTP) against a real Switchboard gateway
with two upstream stdio servers, switchboard-fixture and server-everything.

Each test runs twice: `legacy` (initialize handshake, protocol 2025-11-25 with sessions) and
`auto` (the SDK's default: probes `server/discover` and uses 2026-07-28 when the server offers it).
Every client pairs for real (`switchboard pair`, then POST /pair) and sends its token as
`Authorization: Bearer` on every request, through an httpx2 client handed to the SDK's transport.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from conftest import Gateway, cleanup_gateway, fixture_server, start_gateway

TEST_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
TOOLS_TIMEOUT_S = 15.0

EXPECTED_TOOLS = [
    "fixture__echo",
    "fixture__add",
    "fixture__slow",
    "fixture__fail",
    "everything__echo",
    "everything__get-sum",
    "switchboard__health_snapshot",
]


@pytest.fixture(params=["legacy", "auto"])
def mode(request) -> str:
    return request.param


def run(fn: Callable[[], Awaitable[None]], timeout: float = TEST_TIMEOUT_S) -> None:
    """Runs an async test body on asyncio with an overall bound."""

    async def bounded() -> None:
        with anyio.fail_after(timeout):
            await fn()

    try:
        anyio.run(bounded)
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap a failed assertion; surface the single cause plainly.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf.with_traceback(leaf.__traceback__) from None


@asynccontextmanager
async def bearer_transport(url: str, token: str) -> AsyncIterator:
    """The SDK's Streamable HTTP transport over an httpx2 client that sends `Authorization: Bearer`
    on every request (POST, the GET stream and the closing DELETE), closed on exit."""
    timeout = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults (create_mcp_http_client)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


def connect(gw: Gateway, mode: str, role: str | None = None, name: str = "switchboard-e2e-py") -> Client:
    """An SDK client for the gateway's /mcp endpoint, to use as `async with connect(...) as client`.

    Pairs a new client first (with `role`, else the default role; blocking, bounded by the CLI and
    HTTP timeouts), then sends its token on every request.
    Its requests (the handshake included) time out after REQUEST_TIMEOUT_S; the whole test after
    TEST_TIMEOUT_S (a cancel scope cannot wrap `__aenter__` alone: the client's task group lives on).
    """
    token = gw.pair(f"{name}-{mode}", role)["token"]
    return Client(bearer_transport(gw.mcp_url, token), mode=mode, read_timeout_seconds=REQUEST_TIMEOUT_S)


async def list_all_tools(client: Client) -> list:
    tools, cursor = [], None
    for _ in range(100):
        res = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(res.tools)
        cursor = res.next_cursor
        if not cursor:
            break
    return tools


async def wait_for_tools(client: Client, expected: list[str], timeout: float = TOOLS_TIMEOUT_S) -> list:
    """Polls tools/list until every expected name is listed (upstreams start in the background)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    last_error: BaseException | None = None
    while True:
        try:
            with anyio.fail_after(REQUEST_TIMEOUT_S):
                tools = await list_all_tools(client)
            seen = [t.name for t in tools]
            last_error = None
            if all(n in seen for n in expected):
                return tools
        except Exception as e:  # noqa: BLE001 - reported below
            last_error = e
        if time.monotonic() >= deadline:
            break
        await anyio.sleep(0.25)
    missing = [n for n in expected if n not in seen]
    raise AssertionError(
        f"tools not listed after {timeout} s: missing {missing}; listed {seen}"
        + (f"; last tools/list error: {last_error!r}" if last_error else "")
    )


def text_of(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def call(client: Client, name: str, arguments: dict | None = None, **kw) -> CallToolResult:
    with anyio.fail_after(REQUEST_TIMEOUT_S + 5):
        return await client.call_tool(name, arguments or {}, **kw)


def test_negotiated_protocol_version(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
            assert client.protocol_version == expected

    run(body)


def test_list_tools(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            tools = await wait_for_tools(client, EXPECTED_TOOLS)
            names = [t.name for t in tools]
            assert "switchboard__telemetry_snapshot" in names
            echo = next(t for t in tools if t.name == "fixture__echo")
            assert echo.input_schema.get("type") == "object"
            assert "text" in echo.input_schema.get("properties", {})

    run(body)


def test_call_fixture_and_everything_tools(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, EXPECTED_TOOLS)

            res = await call(client, "fixture__echo", {"text": "hello from python"})
            assert not res.is_error
            assert text_of(res) == "hello from python"

            res = await call(client, "fixture__add", {"a": 2, "b": 3})
            assert not res.is_error
            assert text_of(res) == "5"

            res = await call(client, "everything__echo", {"message": "hi everything"})
            assert not res.is_error
            assert text_of(res) == "Echo: hi everything"

            res = await call(client, "everything__get-sum", {"a": 20, "b": 22})
            assert not res.is_error
            assert "42" in text_of(res)

    run(body)


def test_progress(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, EXPECTED_TOOLS)
            seen: list[tuple[float, float | None, str | None]] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append((progress, total, message))

            res = await call(client, "fixture__slow", {"steps": 5, "step_ms": 50}, progress_callback=on_progress)
            assert not res.is_error
            assert text_of(res) == "done after 5 steps"
            assert len(seen) == 5, f"progress notifications: {seen}"
            assert [p for p, _, _ in seen] == [1, 2, 3, 4, 5]
            assert all(t == 5 for _, t, _ in seen)
            assert [m for _, _, m in seen] == [f"step {i} of 5" for i in range(1, 6)]

    run(body)


def test_cancel_then_keep_working(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, EXPECTED_TOOLS)

            def cancel_lines() -> int | None:
                tail = gateway.upstream_stderr("fixture")
                return None if tail is None else sum("cancelled at step" in line for line in tail)

            cancelled_before = await anyio.to_thread.run_sync(cancel_lines)
            started = time.monotonic()
            finished = None
            with anyio.move_on_after(0.3) as scope:
                finished = await client.call_tool("fixture__slow", {"steps": 50, "step_ms": 100})
            elapsed = time.monotonic() - started
            assert scope.cancelled_caught, f"the slow call was not cancelled: {finished}"
            assert elapsed < 2.3, f"cancelling took {elapsed:.2f} s"

            # The cancellation reaches the upstream: the fixture logs "request N cancelled at step i"
            # to stderr, which the gateway keeps per server (GET /api/servers). Skipped if not exposed.
            if cancelled_before is not None:
                deadline = time.monotonic() + 3
                now = cancelled_before
                while now is not None and now <= cancelled_before and time.monotonic() < deadline:
                    await anyio.sleep(0.1)
                    now = await anyio.to_thread.run_sync(cancel_lines)
                tail = await anyio.to_thread.run_sync(gateway.upstream_stderr, "fixture")
                assert now is not None and now > cancelled_before, (
                    f"the upstream fixture never logged the cancellation; its stderr tail: {tail}"
                )

            res = await call(client, "fixture__echo", {"text": "still alive"})
            assert text_of(res) == "still alive"

    run(body)


def test_tool_error_is_error(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, EXPECTED_TOOLS)
            res = await call(client, "fixture__fail", {"message": "planned failure"})
            assert res.is_error is True
            assert "planned failure" in text_of(res)

    run(body)


def test_unknown_tool_fails(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, EXPECTED_TOOLS)
            try:
                res = await call(client, "fixture__nope", {})
            except MCPError as e:
                message = e.error.message
            else:
                assert res.is_error, f"unknown tool should fail, got {res}"
                message = text_of(res)
            assert "nope" in message, f"the error names the tool: {message!r}"

    run(body)


def test_health_snapshot(gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, ["switchboard__health_snapshot"])
            res = await call(client, "switchboard__health_snapshot", {})
            assert not res.is_error, text_of(res)
            assert res.content or res.structured_content, f"empty health snapshot: {res}"
            if res.content:
                assert any(isinstance(c, TextContent) and c.text.strip() for c in res.content) or res.structured_content

    run(body)


def test_reader_role_is_refused_other_tools(gateway: Gateway, mode: str) -> None:
    """A `reader` client lists only its allowlist, and a call outside it is a JSON-RPC error."""

    async def body() -> None:
        # Wait as a default client until the upstreams are up, so the reader's list is complete.
        async with connect(gateway, mode) as client:
            await wait_for_tools(client, EXPECTED_TOOLS)
        async with connect(gateway, mode, role="reader", name="switchboard-e2e-py-reader") as client:
            names = sorted(t.name for t in await list_all_tools(client))
            assert names == ["fixture__echo", "switchboard__health_snapshot"]

            with pytest.raises(MCPError) as raised:
                await call(client, "fixture__add", {"a": 2, "b": 3})
            assert raised.value.error.message == "tool 'fixture__add' is not allowed for role 'reader'"
            assert raised.value.error.code == -32003

            res = await call(client, "fixture__echo", {"text": "reader may echo"})
            assert not res.is_error
            assert text_of(res) == "reader may echo"

    run(body)


def test_sigterm_exits_zero() -> None:
    """SIGTERM stops the gateway with exit code 0 (its own gateway, not the shared one)."""
    gw = start_gateway([fixture_server()])
    try:

        async def body() -> None:
            async with connect(gw, "legacy") as client:
                await wait_for_tools(client, ["fixture__echo"])

        run(body)
    except BaseException as e:
        gw.stop()
        logs = gw.logs()
        cleanup_gateway(gw)
        raise AssertionError(f"{e}\n--- gateway stderr ---\n{logs}") from e
    code, forced = gw.stop()
    logs = gw.logs()
    cleanup_gateway(gw)
    assert not forced, f"the gateway did not exit within 5 s of SIGTERM\n{logs}"
    assert code == 0, f"exit code {code}\n{logs}"


def test_switchboard_connect_is_a_stdio_server_for_the_sdk(gateway: Gateway) -> None:
    """`switchboard connect` lets a client that only starts stdio servers use the gateway: the
    SDK's stdio client launches it and reaches a tool through it (2025-11-25 sessions)."""
    import os

    from mcp.client.stdio import StdioServerParameters, stdio_client

    from conftest import gateway_bin

    token = gateway.pair("connect-bridge")["token"]
    params = StdioServerParameters(
        command=gateway_bin(),
        args=["connect", "--url", gateway.mcp_url],
        env={**os.environ, "SWITCHBOARD_TOKEN": token, "SWITCHBOARD_LOG": "warn"},
    )

    async def body() -> None:
        async with Client(stdio_client(params), mode="legacy", read_timeout_seconds=REQUEST_TIMEOUT_S) as client:
            await wait_for_tools(client, ["fixture__echo"])
            res = await call(client, "fixture__echo", {"text": "through the stdio bridge"})
            assert text_of(res) == "through the stdio bridge"
            progress: list[float] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                progress.append(p)

            res = await call(client, "fixture__slow", {"steps": 3, "step_ms": 20}, progress_callback=on_progress)
            assert text_of(res) == "done after 3 steps"
            assert progress == [1.0, 2.0, 3.0]

    run(body)
