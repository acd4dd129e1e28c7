//! MCP over WebSocket as a client: one JSON-RPC message per text frame, both ways, on one
//! socket (the configured headers go on the handshake).
//!
//! The socket is the connection: when it closes, breaks, or stops answering pings (one every
//! [`PING_EVERY`], dead after [`DEAD_AFTER`] of silence), the connection is lost and the
//! supervisor reconnects. Stopping (or the gateway's shutdown) sends a close frame (1001) and
//! waits briefly for the server's. The socket's task runs on the gateway's task tracker.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::link::{Dial, LinkState, MAX_MESSAGE, explain_tls};
use crate::upstream::connection::Outbox;
use crate::upstream::state::Inner;

/// How often we ping the server.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Silence (no frame of any kind) after which the server counts as gone.
const DEAD_AFTER: Duration = Duration::from_secs(75);
/// How long a polite close waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the WebSocket (bounded by the start timeout) and starts its task.
pub(super) async fn start(inner: &Inner, dial: Dial<'_>) -> Result<JoinHandle<()>, String> {
    let (url, headers, outbox, state) = (dial.url, dial.headers, dial.outbox, dial.state);
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("url {url:?}: {e}"))?;
    request.headers_mut().extend(headers);
    if let Some(token) = &dial.bearer
        && let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        v.set_sensitive(true);
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, v);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connecting = tokio_tungstenite::connect_async_with_config(
        request,
        Some(config),
        true, /* no Nagle */
    );
    let socket = match tokio::time::timeout(inner.limits.start_timeout(), connecting).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp)))
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                && let Some((oauth, _)) = &dial.oauth =>
        {
            // The handshake wants a login: noted for the supervisor, like a 401 over HTTP.
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let why =
                oauth.needs_login_reason(&format!("server {url} asks for a login (HTTP 401)"));
            oauth.note_unauthorized(challenge, why.clone());
            return Err(why);
        }
        Ok(Err(e)) => {
            return Err(format!(
                "cannot connect to {url}: {}",
                explain_tls(e.to_string())
            ));
        }
        Err(_) => {
            return Err(format!(
                "cannot connect to {url}: no WebSocket within {} ms",
                inner.limits.start_timeout().as_millis()
            ));
        }
    };
    Ok(inner.tasks.spawn(run(socket, outbox, state.clone())))
}

/// Pumps messages both ways until the socket ends or we are asked to close.
async fn run(socket: Socket, mut outbox: Outbox, state: Arc<LinkState>) {
    let (mut sink, mut stream) = socket.split();
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let why = loop {
        tokio::select! {
            out = outbox.next() => match out {
                Some(bytes) => {
                    let text = match String::from_utf8(bytes) {
                        Ok(t) => t,
                        Err(_) => continue, // our own JSON is UTF-8; never happens
                    };
                    if let Err(e) = sink.send(Message::text(text)).await {
                        break format!("cannot send: {e}");
                    }
                }
                None if state.is_lost() => return,
                None => {
                    let bye = CloseFrame { code: CloseCode::Away, reason: "Switchboard is stopping".into() };
                    let _ = sink.send(Message::Close(Some(bye))).await;
                    // The server's close frame, briefly; then the socket is dropped anyway.
                    let _ = tokio::time::timeout(CLOSE_WAIT, async {
                        while let Some(Ok(m)) = stream.next().await {
                            if m.is_close() { break; }
                        }
                    }).await;
                    break "closed by Switchboard".into();
                }
            },
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => state.conn.receive(text.as_bytes()),
                    Some(Ok(Message::Binary(bytes))) => state.conn.receive(&bytes),
                    // tungstenite queued the pong; send it now rather than with the next message
                    Some(Ok(Message::Ping(_))) => {
                        let _ = sink.flush().await;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => break match frame {
                        Some(f) => format!("the server closed the WebSocket ({} {})", u16::from(f.code), f.reason),
                        None => "the server closed the WebSocket".into(),
                    },
                    Some(Err(e)) => break format!("the WebSocket broke: {e}"),
                    None => break "the WebSocket ended".into(),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    break format!("no frame from the server for {} s (pings unanswered)", DEAD_AFTER.as_secs());
                }
                if let Err(e) = sink.send(Message::Ping(Bytes::new())).await {
                    break format!("cannot send: {e}");
                }
            }
        }
    };
    state.lose(why);
}
