"""End-to-end: every content type through the gateway, read by the official Python MCP SDK client,
is what the same client reads from the server directly (switchboard-fixture `--rich`, over stdio):
text, image, audio, resource links and embedded resources (text and blob), each with annotations
and `_meta`; `structuredContent`; tools' `title`, `icons`, `outputSchema` and `execution`;
resources, templates and prompts with every field. Both session modes of the SDK.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from conftest import Gateway, cleanup_gateway, fixture_bin, fixture_server, start_gateway
from test_gateway import REQUEST_TIMEOUT_S, bearer_transport, call, list_all_tools, run, wait_for_tools

PREFIX = "rich__"


@pytest.fixture(scope="module")
def rich_gateway():
    gw = start_gateway([fixture_server("rich", ["--rich"])])
    try:
        yield gw
    finally:
        cleanup_gateway(gw)


@pytest.fixture(params=["legacy", "auto"])
def mode(request) -> str:
    return request.param


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


async def everything(client: Client, prefix: str) -> dict:
    """What the client reads of the rich fixture: its tools, one rich call, resources, templates,
    reads, prompts and a prompt, as the SDK's models dump them."""
    tools = [dump(t) for t in await list_all_tools(client) if t.name.startswith(prefix)]
    for t in tools:
        t["name"] = t["name"].removeprefix(prefix)
    prompts = [dump(p) for p in (await client.list_prompts()).prompts if p.name.startswith(prefix)]
    for p in prompts:
        p["name"] = p["name"].removeprefix(prefix)
    reads = {}
    for uri in ["fixture://rich/text", "fixture://rich/blob", "fixture://rich/7"]:
        reads[uri] = dump(await client.read_resource(uri))
    return {
        "tools": sorted(tools, key=lambda t: t["name"]),
        "call": dump(await call(client, prefix + "rich")),
        "resources": [dump(r) for r in (await client.list_resources()).resources if r.uri.startswith("fixture://rich/")],
        "templates": [dump(t) for t in (await client.list_resource_templates()).resource_templates],
        "reads": reads,
        "prompts": prompts,
        "prompt": dump(await client.get_prompt(prefix + "rich", {"topic": "owls"})),
    }


def without_cache_hints(value: Any) -> Any:
    """A 2026-07-28 result carries `resultType` and caching hints the gateway adds (a server that
    speaks 2025-11-25 sends none); everything else must be equal."""
    if isinstance(value, dict):
        return {k: without_cache_hints(v) for k, v in value.items() if k not in ("resultType", "ttlMs", "cacheScope")}
    if isinstance(value, list):
        return [without_cache_hints(v) for v in value]
    return value


def test_every_content_type_as_directly(rich_gateway: Gateway, mode: str) -> None:
    async def body() -> None:
        token = rich_gateway.pair(f"switchboard-e2e-py-content-{mode}")["token"]
        async with Client(
            bearer_transport(rich_gateway.mcp_url, token), mode=mode, read_timeout_seconds=REQUEST_TIMEOUT_S
        ) as client:
            await wait_for_tools(client, [PREFIX + "rich"])
            through = await everything(client, PREFIX)
        direct_server = StdioServerParameters(command=fixture_bin(), args=["--rich"])
        async with Client(stdio_client(direct_server), mode="legacy", read_timeout_seconds=REQUEST_TIMEOUT_S) as client:
            plain = await everything(client, "")

        # the reference shows every kind, so that two equally lossy runs cannot agree
        kinds = [c["type"] for c in plain["call"]["content"]]
        assert kinds == ["text", "image", "audio", "resource_link", "resource", "resource"], kinds
        assert plain["call"]["content"][0]["annotations"]["priority"] == 0.7
        assert plain["call"]["content"][5]["resource"]["blob"]
        assert plain["call"]["structuredContent"]["ok"] is True
        rich_tool = next(t for t in plain["tools"] if t["name"] == "rich")
        assert rich_tool["title"] == "Rich answer" and rich_tool["icons"] and rich_tool["outputSchema"]
        assert rich_tool["inputSchema"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert plain["prompt"]["messages"][4]["content"]["type"] == "resource"

        for key in plain:
            assert without_cache_hints(through[key]) == without_cache_hints(plain[key]), key

    run(body)
