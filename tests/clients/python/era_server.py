"""A 2026-07-28 MCP server over stdio, built on the official Python SDK (2.3.0): it asks its
client things the 2026-07-28 way, with `input_required` results (SEP-2322) answered by the
client's retry with `inputResponses` and the echoed, SDK-sealed `requestState`.

Run by the gateway as a stdio child in `crates/core/tests/it/eras.rs` and the SDK client tests.
Tools:
- `ask_name`: elicits a name (form), answers `Hello, <name>!` (or says it was declined).
- `ask_model`: samples the client's model with `prompt`, answers what the model said.
- `ask_roots`: lists the client's roots, answers their URIs.
- `ask_both`: two rounds, an elicitation and then a sampling request.
- `ask_forever`: asks again on every retry (a client must give up).
- `plain`: no input needed.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import (
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    ListRootsRequest,
    SamplingMessage,
    TextContent,
)

server = MCPServer("era-server")


def text(s: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=s)])


def elicit(message: str) -> ElicitRequest:
    return ElicitRequest(
        params=ElicitRequestFormParams(
            message=message,
            requested_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        )
    )


def sample(prompt: str) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=50,
        )
    )


def answer(ctx: Context, key: str) -> Any | None:
    responses = ctx.input_responses or {}
    got = responses.get(key)
    return None if got is None else got.model_dump(by_alias=True, exclude_none=True, mode="json")


def elicited(got: dict[str, Any]) -> str:
    if got.get("action") != "accept":
        return f"no name: {got.get('action')}"
    return f"Hello, {(got.get('content') or {}).get('name')}!"


@server.tool()
async def ask_name(ctx: Context) -> CallToolResult | InputRequiredResult:
    """Asks the client for a name (elicitation through input_required)."""
    got = answer(ctx, "name")
    if got is None:
        return InputRequiredResult(input_requests={"name": elicit("What is your name?")}, request_state="name")
    return text(elicited(got))


@server.tool()
async def ask_model(prompt: str, ctx: Context) -> CallToolResult | InputRequiredResult:
    """Asks the client's model (sampling through input_required)."""
    got = answer(ctx, "model")
    if got is None:
        return InputRequiredResult(input_requests={"model": sample(prompt)}, request_state="model")
    return text(f"the model said: {got.get('content', {}).get('text')}")


@server.tool()
async def ask_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    """Asks the client for its roots (roots/list through input_required)."""
    got = answer(ctx, "roots")
    if got is None:
        return InputRequiredResult(input_requests={"roots": ListRootsRequest()}, request_state="roots")
    return text("roots: " + ", ".join(r["uri"] for r in got.get("roots", [])))


@server.tool()
async def ask_both(ctx: Context) -> CallToolResult | InputRequiredResult:
    """Two rounds: a name first, then the model, each answered by a retry."""
    if ctx.request_state is None:
        return InputRequiredResult(input_requests={"name": elicit("Your name?")}, request_state="round-1")
    if ctx.request_state.startswith("round-1"):
        name = elicited(answer(ctx, "name") or {})
        return InputRequiredResult(
            input_requests={"model": sample(f"greet: {name}")}, request_state=f"round-2:{name}"
        )
    got = answer(ctx, "model") or {}
    return text(f"{ctx.request_state.removeprefix('round-2:')} / {got.get('content', {}).get('text')}")


@server.tool()
async def ask_forever(ctx: Context) -> InputRequiredResult:
    """Never satisfied: every retry is asked again."""
    n = int(ctx.request_state or "0") + 1
    return InputRequiredResult(input_requests={f"name-{n}": elicit(f"Again ({n})?")}, request_state=str(n))


@server.tool()
async def plain(word: str) -> str:
    """Echoes `word`: no input needed."""
    return f"plain: {word}"


if __name__ == "__main__":
    server.run("stdio")
