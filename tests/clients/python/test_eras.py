"""End-to-end: both protocol eras bridged, with the official Python MCP SDK client.

server-everything behind the gateway speaks 2025-11-25 and asks its client with a request of its
own (`elicitation/create`); a 2026-07-28 client (`mode="auto"`) is never sent a request: it gets an
`input_required` result (SEP-2322), fulfils it with its `elicitation_callback`, and its retry with
`inputResponses` answers the server's waiting request. The outcome must be what the same client
gets from server-everything directly (legacy, over stdio). A retry that does not fit is refused
with -32602 and loses nothing.
"""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitResult, InputRequiredResult

from conftest import Gateway
from test_asks import ACCEPT, PREFIX, Asked, everything_stdio, normalize
from test_gateway import REQUEST_TIMEOUT_S, bearer_transport, call, run, text_of, wait_for_tools

TOOL = "trigger-elicitation-request"


def dump(result) -> dict:
    """What must agree between the eras: the tool's content and error flag (the 2026-07-28 result
    also carries `resultType`, which the older one has no field for)."""
    d = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"content": d.get("content"), "isError": d.get("isError", False)}


@pytest.mark.parametrize(
    "answer",
    [ACCEPT, ElicitResult(action="decline"), ElicitResult(action="cancel")],
    ids=["accept", "decline", "cancel"],
)
def test_a_2026_client_answers_an_old_servers_elicitation_through_input_required(
    gateway: Gateway, answer: ElicitResult
) -> None:
    through, direct = Asked(lambda _: answer), Asked(lambda _: answer)

    async def body() -> None:
        token = gateway.pair("switchboard-e2e-py-eras")["token"]
        async with Client(
            bearer_transport(gateway.mcp_url, token),
            mode="auto",
            read_timeout_seconds=REQUEST_TIMEOUT_S,
            elicitation_callback=through,
        ) as client:
            assert client.protocol_version == "2026-07-28"
            await wait_for_tools(client, [PREFIX + TOOL])
            via_gateway = await call(client, PREFIX + TOOL)
            # the client stays usable: a call that asks nothing is one round
            echoed = await call(client, PREFIX + "echo", {"message": "still here"})
            assert text_of(echoed) == "Echo: still here"
        async with Client(
            stdio_client(everything_stdio()),
            mode="legacy",
            read_timeout_seconds=REQUEST_TIMEOUT_S,
            elicitation_callback=direct,
        ) as client:
            plain = await call(client, TOOL)
        assert normalize(dump(via_gateway)) == normalize(dump(plain))
        assert [a["mode"] for a in through.asks] == ["form"]
        assert normalize(through.asks) == normalize(direct.asks)

    run(body)


def test_rounds_driven_by_hand_bad_retries_refused_and_nothing_lost(gateway: Gateway) -> None:
    async def body() -> None:
        token = gateway.pair("switchboard-e2e-py-eras-manual")["token"]
        async with Client(
            bearer_transport(gateway.mcp_url, token),
            mode="auto",
            read_timeout_seconds=REQUEST_TIMEOUT_S,
            elicitation_callback=Asked(lambda _: ACCEPT),
        ) as client:
            await wait_for_tools(client, [PREFIX + TOOL])
            first = await client.session.call_tool(PREFIX + TOOL, {}, allow_input_required=True)
            assert isinstance(first, InputRequiredResult), first
            assert first.request_state
            [(key, request)] = first.input_requests.items()
            assert request.method == "elicitation/create"

            with pytest.raises(MCPError) as refused:
                await client.session.call_tool(
                    PREFIX + TOOL,
                    {},
                    input_responses={"not-" + key: ACCEPT},
                    request_state=first.request_state,
                    allow_input_required=True,
                )
            assert refused.value.error.code == -32602
            assert "not asked" in refused.value.error.message

            with pytest.raises(MCPError) as unknown:
                await client.session.call_tool(
                    PREFIX + TOOL,
                    {},
                    input_responses={key: ACCEPT},
                    request_state="sbrs_never_given",
                    allow_input_required=True,
                )
            assert unknown.value.error.code == -32602
            assert "unknown requestState" in unknown.value.error.message

            # still waiting: the retry that fits completes the call
            done = await client.session.call_tool(
                PREFIX + TOOL,
                {},
                input_responses={key: ACCEPT},
                request_state=first.request_state,
                allow_input_required=True,
            )
            assert not isinstance(done, InputRequiredResult), done
            assert "- Name: Grace Hopper" in text_of(done), text_of(done)

    run(body)
