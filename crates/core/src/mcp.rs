//! The MCP gateway: every supervised server's tools, resources and prompts as one MCP server,
//! behind `/mcp` (Streamable HTTP: its sessions served here, a fast path for plain requests,
//! rmcp for what else stateless 2026-07-28 requests need) and `/ws`.
//!
//! This file only declares the parts and names what the rest of the crate uses. A request
//! flows one way through them, each file calling only those below it:
//! - `streamable` (`/mcp` sessions), `fast` (the `/mcp` fast path), `handler` (rmcp's
//!   `ServerHandler`, for the stateless requests the fast path leaves), `ws` (`/ws`): the
//!   transports, each turning its requests into a call context;
//! - `dispatch`: what each method answers, over the gateway; `page`: its lists in pages, with
//!   opaque cursors;
//! - `gateway`: [`McpGateway`], the upstreams, the aggregated tool names and where a call goes;
//! - `call`: one call's way to its server and its record (telemetry, call log, events,
//!   progress); `eras`: a server's requests to a 2026-07-28 client as `input_required`
//!   results, and the client's retries with the answers;
//! - `method` (the method table the transports and the dispatcher read), `raw` (the pass-through of tool arguments and results), `jsonrpc` (framing, error codes),
//!   `session` (MCP sessions and their progress streams), `names` (`<server>__<tool>`).

mod call;
pub(crate) mod dispatch;
mod eras;
pub(crate) mod fast;
mod gateway;
mod handler;
pub(crate) mod jsonrpc;
mod method;
pub(crate) mod names;
mod page;
mod raw;
pub(crate) mod session;
pub(crate) mod streamable;
pub(crate) mod ws;

pub(crate) use dispatch::Dispatcher;
pub use gateway::McpGateway;
pub(crate) use handler::{ClientGone, Handler};
