//! The registration server at `/ws/mcp` (IEP v1.0): MCP servers such as intent-engine announce
//! their projects here.
//!
//! One task per socket owns that socket: it answers the client, pings it, and retires it when
//! told to (superseded, shutdown, idle, ping timeout, refused `register`). Every close is
//! announced with `goodbye` and a close frame; frames the client sent before it saw them are
//! still processed (they can no longer be answered). The global connection cap is a semaphore
//! taken before the upgrade.

pub mod protocol;
pub(crate) mod registry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RegistrationConfig;
use crate::http::error::ApiError;
use protocol::{ClientMessage, ErrorCode, ProtocolError, ServerMessage};
pub(crate) use registry::{ConnId, ProjectView, Registry};

/// A write to a peer that takes longer than this means the peer is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we wait for the peer's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Per-socket read buffer: registration messages are small, and 10,000 sockets must fit in
/// about 13 KB each.
const READ_BUFFER: usize = 4 * 1024;

/// Shared state of the registration server.
#[derive(Debug)]
pub struct RegistrationServer {
    registry: Registry,
    config: RegistrationConfig,
    /// Global connection cap (never per address: every local client is 127.0.0.1).
    permits: Arc<Semaphore>,
    next_conn: AtomicU64,
    /// Cancelled when the gateway shuts down: every socket says goodbye and closes.
    shutdown: CancellationToken,
    /// Socket tasks, so that shutdown can wait for their goodbyes.
    tasks: TaskTracker,
}

impl RegistrationServer {
    pub fn new(
        registry: Registry,
        config: RegistrationConfig,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            registry,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config,
            next_conn: AtomicU64::new(1),
            shutdown,
            tasks,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registration sockets open now.
    pub(crate) fn open_sockets(&self) -> usize {
        self.config.max_connections - self.permits.available_permits()
    }
}

/// `GET /ws/mcp`.
pub(crate) async fn upgrade(
    State(server): State<Arc<RegistrationServer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    if !peer.ip().is_loopback() {
        return ApiError::forbidden(
            "foreign_peer",
            format!(
                "registration is open to loopback peers only, not {}",
                peer.ip()
            ),
        )
        .into_response();
    }
    let permit = server.permits.clone().try_acquire_owned().ok();
    let limit = server.config.transport_limit();
    let tasks = server.tasks.clone();
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                match permit {
                    Some(permit) => Socket::new(socket, server, permit).run().await,
                    None => reject_at_capacity(socket, &server).await,
                }
            })
        })
}

async fn reject_at_capacity(mut ws: WebSocket, server: &RegistrationServer) {
    let limit = server.config.max_connections;
    tracing::warn!(limit, "registration socket refused: at capacity");
    let err = ProtocolError::new(
        ErrorCode::RegistrationFailed,
        format!("Switchboard is at capacity ({limit} registration sockets open); try again later"),
    )
    .with_details(serde_json::json!({"reason": "capacity", "limit": limit}));
    if send(&mut ws, &ServerMessage::Error(err)).await {
        close(&mut ws, close_code::AGAIN, "server at capacity").await;
    }
}

/// Writes one message; `false` means the peer is gone.
async fn send(ws: &mut WebSocket, msg: &ServerMessage) -> bool {
    matches!(
        timeout(SEND_TIMEOUT, ws.send(Message::Text(msg.to_json().into()))).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame; `false` means the peer is gone (or closed first).
async fn send_close(ws: &mut WebSocket, code: u16, reason: &str) -> bool {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    matches!(
        timeout(SEND_TIMEOUT, ws.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame and waits (bounded) for the peer's, discarding what comes before it:
/// for sockets refused before they could say anything.
async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    if !send_close(ws, code, reason).await {
        return;
    }
    let _ = timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = ws.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Why a socket's loop ended.
enum End {
    /// We close it: `goodbye{reason}` then a close frame.
    Goodbye { reason: String, code: u16 },
    /// The client said goodbye or sent a close frame: we answer with a close frame.
    ClientClosed,
    /// A frame beyond the transport's limit.
    TooBig,
    /// The peer vanished; nothing more can be written.
    Gone,
}

enum Flow {
    Continue,
    Stop(End),
}

struct Socket {
    ws: WebSocket,
    server: Arc<RegistrationServer>,
    conn: ConnId,
    session_id: String,
    /// Cancelled by the registry when a newer socket of the same project supersedes this one.
    retire: CancellationToken,
    /// The project this socket is attached to, if it registered.
    project: Option<String>,
    /// Pings sent since the last pong.
    missed_pongs: u32,
    _permit: OwnedSemaphorePermit,
}

impl Socket {
    fn new(ws: WebSocket, server: Arc<RegistrationServer>, permit: OwnedSemaphorePermit) -> Self {
        let conn = server.next_conn.fetch_add(1, Ordering::Relaxed);
        Self {
            ws,
            server,
            conn,
            session_id: uuid::Uuid::new_v4().to_string(),
            retire: CancellationToken::new(),
            project: None,
            missed_pongs: 0,
            _permit: permit,
        }
    }

    async fn run(mut self) {
        let cfg = self.server.config.clone();
        let shutdown = self.server.shutdown.clone();
        let retire = self.retire.clone();
        let mut ping =
            tokio::time::interval_at(Instant::now() + cfg.ping_interval(), cfg.ping_interval());
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let idle = tokio::time::sleep(cfg.idle_timeout());
        tokio::pin!(idle);
        tracing::debug!(conn = self.conn, "registration socket open");

        let end = loop {
            let flow = tokio::select! {
                biased;
                () = shutdown.cancelled() => Flow::Stop(End::Goodbye {
                    reason: "shutdown".into(),
                    code: close_code::AWAY,
                }),
                () = retire.cancelled() => Flow::Stop(End::Goodbye {
                    reason: "superseded".into(),
                    code: close_code::NORMAL,
                }),
                () = &mut idle, if self.project.is_none() => Flow::Stop(End::Goodbye {
                    reason: format!("idle: no register within {} ms", cfg.idle_timeout_ms),
                    code: close_code::POLICY,
                }),
                _ = ping.tick() => self.on_ping_tick(cfg.max_missed_pongs).await,
                msg = self.ws.recv() => self.on_frame(msg).await,
            };
            if let Flow::Stop(end) = flow {
                break end;
            }
        };

        if let Some(path) = self.project.take() {
            self.server.registry.detach(self.conn, &path).await;
        }
        match end {
            End::Goodbye { reason, code } => {
                tracing::debug!(conn = self.conn, %reason, "closing registration socket");
                let bye = ServerMessage::Goodbye {
                    reason: Some(reason.clone()),
                };
                if send(&mut self.ws, &bye).await {
                    self.close(code, &reason).await;
                }
            }
            End::ClientClosed => self.close(close_code::NORMAL, "goodbye").await,
            End::TooBig => {
                let reason = format!(
                    "message over the {} byte limit",
                    self.server.config.transport_limit()
                );
                self.close(close_code::SIZE, &reason).await;
            }
            End::Gone => {}
        }
        tracing::debug!(conn = self.conn, "registration socket closed");
    }

    /// Sends our close frame, then reads (bounded by [`CLOSE_WAIT`]) until the peer's. What
    /// the client sent before it saw our goodbye still counts: the real client pumps its
    /// db_operations through whichever socket holds its one shared channel, in a reconnect
    /// storm the oldest, i.e. the one being retired. They are recorded; none can be answered.
    async fn close(&mut self, code: u16, reason: &str) {
        if !send_close(&mut self.ws, code, reason).await {
            return;
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.recv()).await {
                Ok(Some(Ok(Message::Text(text)))) => self.on_late_text(text.as_str()).await,
                Ok(Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => break,
            }
        }
    }

    /// A text frame that arrived after our close frame: a `db_operation` is recorded, anything
    /// else needs an answer we may no longer send and is dropped.
    async fn on_late_text(&mut self, text: &str) {
        if text.len() > self.server.config.max_message_bytes {
            tracing::debug!(
                conn = self.conn,
                size = text.len(),
                "oversized frame after close"
            );
            return;
        }
        match protocol::parse(text) {
            Ok(ClientMessage::DbOperation { project_path, op }) => {
                if let Err(e) = self.server.registry.db_operation(&project_path, op).await {
                    tracing::debug!(conn = self.conn, error = %e, "db_operation after close refused");
                }
            }
            Ok(_) | Err(_) => {
                tracing::debug!(
                    conn = self.conn,
                    "frame after close dropped: it needs an answer"
                );
            }
        }
    }

    async fn on_ping_tick(&mut self, max_missed: u32) -> Flow {
        if self.missed_pongs >= max_missed {
            return Flow::Stop(End::Goodbye {
                reason: format!("ping timeout: {max_missed} pings unanswered"),
                code: close_code::POLICY,
            });
        }
        self.missed_pongs += 1;
        self.reply(&ServerMessage::Ping).await
    }

    async fn reply(&mut self, msg: &ServerMessage) -> Flow {
        if send(&mut self.ws, msg).await {
            Flow::Continue
        } else {
            Flow::Stop(End::Gone)
        }
    }

    async fn refuse(&mut self, err: ProtocolError) -> Flow {
        tracing::debug!(conn = self.conn, code = ?err.code, message = %err.message, "refused");
        self.reply(&ServerMessage::Error(err)).await
    }

    async fn on_frame(&mut self, msg: Option<Result<Message, axum::Error>>) -> Flow {
        match msg {
            None => Flow::Stop(End::Gone),
            Some(Err(e)) => {
                let too_big = e.into_inner().downcast_ref::<tungstenite::Error>().is_some_and(
                    |e| matches!(e, tungstenite::Error::Capacity(_)),
                );
                Flow::Stop(if too_big { End::TooBig } else { End::Gone })
            }
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(bytes))) => {
                self.refuse(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!(
                        "binary frames are not part of the protocol ({} bytes ignored); send JSON text frames",
                        bytes.len()
                    ),
                ))
                .await
            }
            Some(Ok(Message::Close(_))) => Flow::Stop(End::ClientClosed),
            // WebSocket-level pings are answered by the transport.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let limit = self.server.config.max_message_bytes;
        if text.len() > limit {
            return self
                .refuse(
                    ProtocolError::new(
                        ErrorCode::InvalidMessage,
                        format!("message is {} bytes; the limit is {limit}", text.len()),
                    )
                    .with_details(serde_json::json!({"limit": limit, "size": text.len()})),
                )
                .await;
        }
        let msg = match protocol::parse(text) {
            Ok(msg) => msg,
            Err(err) => return self.refuse(err).await,
        };
        match msg {
            ClientMessage::Hello { entity_type, .. } => {
                tracing::debug!(conn = self.conn, %entity_type, "hello");
                let welcome = ServerMessage::Welcome {
                    session_id: self.session_id.clone(),
                };
                self.reply(&welcome).await
            }
            ClientMessage::Register(info) => self.on_register(info).await,
            ClientMessage::Ping => self.reply(&ServerMessage::Pong).await,
            ClientMessage::Pong => {
                self.missed_pongs = 0;
                Flow::Continue
            }
            ClientMessage::Goodbye { reason } => {
                tracing::debug!(conn = self.conn, ?reason, "client goodbye");
                Flow::Stop(End::ClientClosed)
            }
            ClientMessage::DbOperation { project_path, op } => {
                match self.server.registry.db_operation(&project_path, op).await {
                    Ok(()) => Flow::Continue,
                    Err(e) => {
                        self.refuse(ProtocolError::new(
                            ErrorCode::RegistrationFailed,
                            e.to_string(),
                        ))
                        .await
                    }
                }
            }
        }
    }

    /// A `register` we refuse: `registered{success:false}` first, because the real client
    /// reads exactly one frame after `register` and backs off only on that; then the reason,
    /// then goodbye and close (the client would not read anything more on this socket).
    async fn refuse_register(&mut self, err: ProtocolError, code: u16) -> Flow {
        if let Flow::Stop(end) = self
            .reply(&ServerMessage::Registered { success: false })
            .await
        {
            return Flow::Stop(end);
        }
        let reason = format!("registration refused: {}", err.code.as_str());
        if let Flow::Stop(end) = self.refuse(err).await {
            return Flow::Stop(end);
        }
        Flow::Stop(End::Goodbye { reason, code })
    }

    async fn on_register(&mut self, mut info: protocol::ProjectInfo) -> Flow {
        let canonical = match validate_project_path(&info.path).await {
            Ok(p) => p,
            Err(reason) => {
                let err = ProtocolError::new(
                    ErrorCode::InvalidPath,
                    format!("project path {:?} rejected: {reason}", info.path),
                )
                .with_details(serde_json::json!({"path": info.path}));
                return self.refuse_register(err, close_code::POLICY).await;
            }
        };
        info.path = canonical.to_string_lossy().into_owned();
        if let Some(previous) = self.project.take_if(|p| *p != info.path) {
            self.server.registry.detach(self.conn, &previous).await;
        }
        let path = info.path.clone();
        match self
            .server
            .registry
            .register(self.conn, &self.retire, info)
            .await
        {
            Ok(()) => {
                self.project = Some(path);
                self.reply(&ServerMessage::Registered { success: true })
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, %path, "registration not saved");
                self.server.registry.rollback(self.conn, &path).await;
                self.project = None;
                let err = ProtocolError::new(
                    ErrorCode::InternalError,
                    format!("registration could not be saved: {e}"),
                );
                self.refuse_register(err, close_code::ERROR).await
            }
        }
    }
}

/// Why a project path is refused: relative, missing, not a directory, or temporary (the real
/// client never registers temp projects, so one arriving is a test or a mistake).
pub(crate) async fn validate_project_path(path: &str) -> Result<PathBuf, String> {
    let raw = Path::new(path);
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if !raw.is_absolute() {
        return Err("the path is relative; send an absolute path".into());
    }
    let canonical = tokio::fs::canonicalize(raw)
        .await
        .map_err(|e| format!("it does not exist ({e})"))?;
    let meta = tokio::fs::metadata(&canonical)
        .await
        .map_err(|e| format!("it cannot be read ({e})"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    let temp = std::env::temp_dir();
    let temp_canonical = tokio::fs::canonicalize(&temp).await.unwrap_or(temp.clone());
    if canonical.starts_with(&temp_canonical) || canonical.starts_with(&temp) {
        return Err(format!(
            "it is inside the temporary directory {}",
            temp.display()
        ));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relative_missing_file_and_temp_paths_are_refused() {
        assert!(
            validate_project_path("rel/path")
                .await
                .unwrap_err()
                .contains("relative")
        );
        assert!(validate_project_path("").await.is_err());
        assert!(
            validate_project_path("/definitely/not/here")
                .await
                .unwrap_err()
                .contains("exist")
        );
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            validate_project_path(&tmp.path().to_string_lossy())
                .await
                .unwrap_err()
                .contains("temporary")
        );
        let file = std::env::current_exe().unwrap();
        assert!(
            validate_project_path(&file.to_string_lossy())
                .await
                .unwrap_err()
                .contains("directory")
        );
        // any existing directory outside the temp dir (the clone itself may be under /tmp)
        let root = std::path::Path::new("/");
        assert_eq!(
            validate_project_path("/").await.unwrap(),
            root.canonicalize().unwrap()
        );
    }
}
