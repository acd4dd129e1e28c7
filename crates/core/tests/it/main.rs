//! End-to-end tests of the core: a real gateway on 127.0.0.1:0, real WebSocket and HTTP
//! clients. One binary for all of them (see STYLE.md).

#![allow(clippy::unwrap_used)]

mod asks;
mod auth;
mod binary;
mod dashboard;
mod discovery;
mod elicit;
mod endpoints;
mod eras;
mod fast_path;
mod fidelity;
mod http;
mod interleave;
mod isolated;
mod lifecycle;
mod mcp;
mod notes;
mod oauth;
mod on_demand;
mod pages;
mod persistence;
mod registration;
mod remote;
mod restart;
mod roles;
mod server_logs;
mod sessions;
mod setup;
mod support;
mod tls;
mod ws;
