//! Pairing over the wire: `POST /pair` (code → token), unpairing (token revoked, sessions
//! closed), and the owner's local control socket that issues codes (`switchboard pair`) and
//! starts OAuth logins to remote servers (`switchboard login`, `logout`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::store::TokenStoreError;
use crate::auth::{Auth, PairError};
use crate::http::error::ApiError;
use crate::mcp::McpGateway;
use crate::mcp::session::Sessions;

/// What pairing and unpairing touch: the tokens, and the sessions an unpaired client loses.
#[derive(Debug, Clone)]
pub struct Pairing {
    auth: Auth,
    /// Every MCP session (closed on unpair, their watchers' streams end).
    sessions: Sessions,
    /// The gateway's port, for the URLs handed to a new client.
    port: u16,
    /// The servers: whose own endpoints a new client is offered, and logins from the control
    /// socket.
    gw: McpGateway,
}

impl Pairing {
    pub(crate) fn new(auth: Auth, gw: McpGateway, port: u16) -> Self {
        Self {
            auth,
            sessions: gw.sessions().clone(),
            port,
            gw,
        }
    }

    /// The configured servers' names, sorted.
    fn server_names(&self) -> Vec<String> {
        self.gw
            .upstreams()
            .iter()
            .map(|up| up.name().to_owned())
            .collect()
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The gateway's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Revokes `name` and closes its MCP sessions. `Ok(false)` if there is no such client.
    pub async fn unpair(&self, name: &str) -> Result<bool, TokenStoreError> {
        if !self.auth.unpair(name).await? {
            return Ok(false);
        }
        self.sessions.close_client(name, "client unpaired");
        Ok(true)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PairRequest {
    code: Option<String>,
    name: Option<String>,
    role: Option<String>,
    /// The longest tool name the client can take (`switchboard setup` knows its agent's).
    name_budget: Option<usize>,
}

/// Ready-to-paste configuration for the common clients: the aggregated `/mcp`, and under
/// `servers` each configured server's own endpoints (`/mcp/<server>`, `/ws/<server>`), the
/// same token opening them all.
fn client_config(port: u16, token: &str, servers: &[String]) -> serde_json::Value {
    let entry = |name: &str, url: &str| {
        json!({
            "claude_code": format!(
                "claude mcp add --transport http {name} {url} --header \"Authorization: Bearer {token}\""
            ),
            "mcp_json": {"mcpServers": {name: {
                "type": "http",
                "url": url,
                "headers": {"Authorization": format!("Bearer {token}")},
            }}},
        })
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut config = entry("switchboard", &url);
    config["url"] = json!(url);
    config["ws_url"] = json!(format!("ws://127.0.0.1:{port}/ws"));
    let own: serde_json::Map<String, serde_json::Value> = servers
        .iter()
        .map(|name| {
            let url = format!("http://127.0.0.1:{port}/mcp/{name}");
            let mut e = entry(name, &url);
            e["url"] = json!(url);
            e["ws_url"] = json!(format!("ws://127.0.0.1:{port}/ws/{name}"));
            (name.clone(), e)
        })
        .collect();
    config["servers"] = own.into();
    config
}

/// `POST /pair`: the code in `X-Pairing-Code` or in a JSON body `{code, name?, role?}`.
pub(crate) async fn pair(
    State(hub): State<Pairing>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req: PairRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PairRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the body must be JSON {{\"code\", \"name\"?, \"role\"?}}: {e}"),
                )
                .into_response();
            }
        }
    };
    let code = headers
        .get("x-pairing-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(req.code);
    let Some(code) = code else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "code_required",
            "send the pairing code in X-Pairing-Code or as {\"code\": \"123456\"}",
        )
        .into_response();
    };
    let paired = hub.auth.pair(peer.ip(), &code, req.name, req.role).await;
    if let (Ok((_, client)), Some(budget)) = (&paired, req.name_budget)
        && let Err(e) = hub.auth.set_name_budget(&client.name, Some(budget)).await
    {
        tracing::warn!(client = %client.name, error = %e, "could not keep the tool-name budget");
    }
    match paired {
        Ok((token, client)) => Json(json!({
            "paired": true,
            "token": token,
            "name": client.name,
            "role": client.role,
            "client_config": client_config(hub.port, &token, &hub.server_names()),
        }))
        .into_response(),
        Err(e @ PairError::RateLimited { retry_after }) => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "paired": false,
                    "error": {"code": "rate_limited", "message": e.to_string()},
                    "retry_after": retry_after,
                })),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
            r
        }
        Err(e) => {
            let (status, code) = match &e {
                PairError::WrongCode { .. } => (StatusCode::FORBIDDEN, "wrong_code"),
                PairError::Expired => (StatusCode::FORBIDDEN, "expired_code"),
                PairError::RoleMismatch(_) => (StatusCode::FORBIDDEN, "role_mismatch"),
                PairError::UnknownRole(_) => (StatusCode::BAD_REQUEST, "unknown_role"),
                PairError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "token_store"),
                PairError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            };
            (
                status,
                Json(json!({"paired": false, "error": {"code": code, "message": e.to_string()}})),
            )
                .into_response()
        }
    }
}

/// The control socket's file name in the data dir.
pub(crate) const CONTROL_SOCKET: &str = "control.sock";

/// Answers one control request: `{"op":"pair","role"?}`, `{"op":"unpair","name"}`,
/// `{"op":"clients"}`, `{"op":"verify","token"}` (which client a token belongs to, if any:
/// `switchboard setup` asks before it replaces an entry), `{"op":"login","server","timeout_s"?}`
/// (the authorization URL), `{"op":"login_wait","server","timeout_s"}` (answers once the login
/// ended and the server runs, or why not), `{"op":"logout","server"}`.
async fn control_request(hub: &Pairing, req: serde_json::Value) -> serde_json::Value {
    let server = || {
        let name = req["server"].as_str().unwrap_or_default();
        hub.gw
            .upstream(name)
            .ok_or_else(|| json!({"ok": false, "error": format!("no server named {name:?}")}))
    };
    let timeout = req["timeout_s"]
        .as_u64()
        .map(std::time::Duration::from_secs);
    match req["op"].as_str() {
        Some("login") => match server() {
            Ok(up) => match up.login(hub.port, timeout).await {
                Ok(url) => json!({"ok": true, "server": up.name(), "authorization_url": url}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            Err(e) => e,
        },
        Some("login_wait") => match server() {
            Ok(up) => {
                let wait = timeout.unwrap_or(std::time::Duration::from_secs(300));
                match up.wait_logged_in(wait).await {
                    Ok(()) => json!({"ok": true, "server": up.name()}),
                    Err(e) => json!({"ok": false, "error": e}),
                }
            }
            Err(e) => e,
        },
        Some("logout") => match server() {
            Ok(up) => match up.logout().await {
                Ok(had) => json!({"ok": true, "server": up.name(), "logged_out": had}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            Err(e) => e,
        },
        Some("pair") => {
            let role = req["role"].as_str().map(str::to_owned);
            match hub.auth.issue_code(role) {
                Ok(code) => json!({
                    "ok": true,
                    "code": code,
                    "expires_in_s": hub.auth.roles().code_ttl.as_secs(),
                    "pair_url": format!("http://127.0.0.1:{}/pair", hub.port),
                }),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        }
        Some("unpair") => {
            let name = req["name"].as_str().unwrap_or_default();
            match hub.unpair(name).await {
                Ok(true) => json!({"ok": true, "unpaired": name}),
                Ok(false) => {
                    json!({"ok": false, "error": format!("no paired client named {name:?}")})
                }
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        }
        Some("clients") => json!({"ok": true, "clients": hub.auth.clients()}),
        Some("verify") => match hub.auth.verify(req["token"].as_str().unwrap_or_default()) {
            Some(caller) => json!({"ok": true, "name": caller.name}),
            None => json!({"ok": false, "error": "not a paired client's token"}),
        },
        other => {
            json!({"ok": false, "error": format!("unknown op {other:?}; use pair, unpair, clients, verify, login, login_wait or logout")})
        }
    }
}

/// Binds the owner's control socket with owner-only permissions (whoever can open it can
/// issue pairing codes). A stale socket file from a crashed run is replaced.
#[cfg(unix)]
pub(crate) fn bind_control(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// Serves the control socket until shutdown, then removes it.
#[cfg(unix)]
pub(crate) async fn serve_control(
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    hub: Pairing,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let hub = hub.clone();
        // tracked: shutdown waits (bounded) for an answer being written
        tasks.spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(64 * 1024));
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                reader.read_line(&mut line),
            )
            .await;
            let reply = match (read, serde_json::from_str::<serde_json::Value>(&line)) {
                (Ok(Ok(_)), Ok(req)) => control_request(&hub, req).await,
                _ => json!({"ok": false, "error": "send one JSON request line"}),
            };
            let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Sends one request to a running gateway's control socket (the CLI side), waiting at most
/// 10 s for the answer.
#[cfg(unix)]
pub async fn control(
    data_dir: &std::path::Path,
    req: serde_json::Value,
) -> Result<serde_json::Value, String> {
    control_within(data_dir, req, std::time::Duration::from_secs(10)).await
}

/// [`control`], waiting at most `wait` (a login waits for the person).
#[cfg(unix)]
pub async fn control_within(
    data_dir: &std::path::Path,
    req: serde_json::Value,
    wait: std::time::Duration,
) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let path = data_dir.join(CONTROL_SOCKET);
    let talk = async {
        let mut stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
            format!(
                "cannot reach Switchboard at {} ({e}); is it running with this data dir?",
                path.display()
            )
        })?;
        stream
            .write_all(format!("{req}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("bad answer from Switchboard: {e}"))
    };
    tokio::time::timeout(wait, talk)
        .await
        .map_err(|_| format!("Switchboard did not answer within {} s", wait.as_secs()))?
}
