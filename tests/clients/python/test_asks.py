"""End-to-end: elicitation through the gateway with the official Python MCP SDK client (its
`elicitation_callback`), on Streamable HTTP to /mcp, with server-everything behind the gateway.

Every scenario runs twice, through the gateway and with the same client on server-everything
directly over stdio, and the two must agree: the tool's result and what the client was asked.
A 2026-07-28 client (`mode="auto"`) is asked through `input_required` results instead:
`test_eras.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import ElicitResult

from conftest import CLIENTS_DIR, Gateway, gateway_bin
from test_gateway import REQUEST_TIMEOUT_S, bearer_transport, call, run, text_of, wait_for_tools

PREFIX = "everything__"

ELICITING_TOOLS = ["trigger-elicitation-request", "trigger-url-elicitation"]


def everything_stdio() -> StdioServerParameters:
    entry = CLIENTS_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    return StdioServerParameters(command=shutil.which("node") or "node", args=[str(entry), "stdio"])


class Asked:
    """An `elicitation_callback` that records what it is asked and answers with `answer(params)`."""

    def __init__(self, answer: Callable[[dict], ElicitResult]) -> None:
        self.answer = answer
        self.asks: list[dict] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        asked = params.model_dump(by_alias=True, exclude_none=True, mode="json")
        self.asks.append(asked)
        return self.answer(asked)


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sort_embedded_json(text: str) -> str:
    """A text ending in a JSON object (server-everything's "Raw result: {...}") with its keys
    sorted: the gateway passes the client's answer on as the same JSON, not in the same key order."""
    start = text.find("{")
    while start >= 0:
        try:
            return text[:start] + json.dumps(json.loads(text[start:]), sort_keys=True, indent=2)
        except ValueError:
            start = text.find("{", start + 1)
    return text


def normalize(value: Any) -> Any:
    """What may differ made equal: key order of JSON the server prints, random ids, and the
    progress token the gateway's MCP library (rmcp) puts on every request it sends."""

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return UUID.sub("<uuid>", sort_embedded_json(v))
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k == "_meta" and isinstance(x, dict):
                    rest = {mk: mv for mk, mv in x.items() if mk != "progressToken"}
                    if rest:
                        out[k] = walk(rest)
                else:
                    out[k] = walk(x)
            return out
        return v

    return walk(value)


async def run_both(
    gateway: Gateway, tool: str, args: dict, answer: Callable[[dict], ElicitResult], own: bool = False
) -> tuple[dict, dict]:
    """Calls `tool` through the gateway (its /mcp, or with `own` the server's own /mcp/everything,
    where names carry no prefix) and on server-everything directly, each with a client whose
    elicitation_callback answers with `answer`; returns ({result, asks}, {result, asks})."""
    token = gateway.pair("switchboard-e2e-py-asks")["token"]
    url, prefix = (f"{gateway.url}/mcp/everything", "") if own else (gateway.mcp_url, PREFIX)
    through, direct = Asked(answer), Asked(answer)
    async with Client(
        bearer_transport(url, token),
        mode="legacy",
        read_timeout_seconds=REQUEST_TIMEOUT_S,
        elicitation_callback=through,
    ) as client:
        await wait_for_tools(client, [prefix + t for t in ELICITING_TOOLS])
        via_gateway = await call(client, prefix + tool, args)
    async with Client(
        stdio_client(everything_stdio()),
        mode="legacy",
        read_timeout_seconds=REQUEST_TIMEOUT_S,
        elicitation_callback=direct,
    ) as client:
        plain = await call(client, tool, args)
    dump = lambda r: r.model_dump(by_alias=True, exclude_none=True, mode="json")  # noqa: E731
    return {"result": dump(via_gateway), "asks": through.asks}, {"result": dump(plain), "asks": direct.asks}


ACCEPT = ElicitResult(action="accept", content={"name": "Grace Hopper", "check": True, "integer": 11})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ACCEPT, [r"User provided the requested information", r"- Name: Grace Hopper", r"- Favorite Integer: 11"]),
        (ElicitResult(action="decline"), [r"User declined to provide the requested information"]),
        (ElicitResult(action="cancel"), [r"User cancelled the elicitation dialog"]),
    ],
    ids=["accept", "decline", "cancel"],
)
def test_form_elicitation_as_directly(gateway: Gateway, answer: ElicitResult, expected: list[str]) -> None:
    async def body() -> None:
        through, plain = await run_both(gateway, "trigger-elicitation-request", {}, lambda _: answer)
        for side in (plain, through):
            assert side["result"].get("isError") is not True, side
            text = "".join(c.get("text", "") for c in side["result"]["content"])
            for pattern in expected:
                assert re.search(pattern, text), (pattern, text)
            assert [a["mode"] for a in side["asks"]] == ["form"]
            assert side["asks"][0]["requestedSchema"]["required"] == ["name"]
        assert normalize(through) == normalize(plain)

    run(body)


def test_form_elicitation_through_the_servers_own_endpoint(gateway: Gateway) -> None:
    """On /mcp/everything the server's tools keep their own names, and its elicitation/create
    reaches the client and comes back as directly."""

    async def body() -> None:
        through, plain = await run_both(gateway, "trigger-elicitation-request", {}, lambda _: ACCEPT, own=True)
        text = "".join(c.get("text", "") for c in through["result"]["content"])
        assert "- Name: Grace Hopper" in text, text
        assert [a["mode"] for a in through["asks"]] == ["form"]
        assert normalize(through) == normalize(plain)

    run(body)


def test_url_elicitation_as_directly(gateway: Gateway) -> None:
    args = {"url": "https://example.com/switchboard-e2e/py", "elicitationId": "switchboard-e2e-py-url"}

    async def body() -> None:
        through, plain = await run_both(
            gateway, "trigger-url-elicitation", args, lambda _: ElicitResult(action="accept")
        )
        for side in (plain, through):
            text = "".join(c.get("text", "") for c in side["result"]["content"])
            assert "User completed the URL elicitation flow" in text, text
            assert "switchboard-e2e-py-url" in text, text
            assert side["asks"][0]["mode"] == "url"
            assert side["asks"][0]["url"] == args["url"]
        assert normalize(through) == normalize(plain)

    run(body)


def test_form_elicitation_through_the_stdio_bridge(gateway: Gateway) -> None:
    """`switchboard connect` (the stdio bridge a stdio-only client starts) carries the server's
    elicitation/create to the client and its answer back, as /mcp does."""
    token = gateway.pair("switchboard-e2e-py-asks-bridge")["token"]
    params = StdioServerParameters(
        command=gateway_bin(),
        args=["connect", "--url", gateway.mcp_url],
        env={**os.environ, "SWITCHBOARD_TOKEN": token, "SWITCHBOARD_LOG": "warn"},
    )
    asked = Asked(lambda _: ACCEPT)

    async def body() -> None:
        async with Client(
            stdio_client(params), mode="legacy", read_timeout_seconds=REQUEST_TIMEOUT_S, elicitation_callback=asked
        ) as client:
            await wait_for_tools(client, [PREFIX + "trigger-elicitation-request"])
            res = await call(client, PREFIX + "trigger-elicitation-request")
            assert not res.is_error, text_of(res)
            assert "- Name: Grace Hopper" in text_of(res), text_of(res)
        assert [a["mode"] for a in asked.asks] == ["form"]

    run(body)
