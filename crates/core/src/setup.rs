//! Connecting agents in one step: `switchboard setup <agent>` (and the dashboard's Connect
//! button) pairs a token for the agent through the owner's control path and writes
//! Switchboard's entry into the agent's own config file; `--remove` takes the entry out and
//! revokes the token. Detection says which agents are installed and which are connected.
//!
//! Every change keeps the rest of the file byte for byte ([`edit`]), writes a backup next to
//! it first, goes through a temp file and a rename, and is refused before anything is paired
//! when the file is malformed or read-only. Running setup twice changes nothing: an entry of
//! ours whose token still works is left as it is. Claude Code is configured through its own
//! CLI (`claude mcp add-json`) when that is on `PATH`, else through its file.
//!
//! Below: [`clients`] (each agent's file, format and entry), `edit` (the edits),
//! [`adopt`] (moving an agent's own servers into Switchboard), and [`agents`] (what a running
//! gateway's dashboard and tray do with all of these).

pub mod adopt;
pub mod agents;
mod clients;
mod edit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

pub(crate) use clients::Bridge;
pub use clients::{Client, Places, Scope};
pub use edit::EditError;

use crate::pairing::Pairing;

/// The entry's name in the agent's file unless `--name` says otherwise.
pub const DEFAULT_ENTRY: &str = "switchboard";

/// How long an agent's own CLI may take (it starts, edits a file, exits).
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Why setup did not happen. Nothing was changed, and no token was left paired.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0} has no project-level config; use --scope user")]
    NoProjectScope(&'static str),
    #[error("{path} {error}; fix or move it and run this again (it was left as it was)")]
    Malformed { path: PathBuf, error: EditError },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source} (it was left as it was)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is read-only; Switchboard left it as it was (make it writable to connect)")]
    ReadOnly(PathBuf),
    #[error("pairing with Switchboard failed: {0}")]
    Pairing(String),
    #[error("`{program}` failed: {message}")]
    Cli { program: String, message: String },
    #[error("{0}")]
    Adopt(String),
}

/// How the entry is written.
#[derive(Debug, Clone)]
pub struct Options {
    pub scope: Scope,
    /// The entry's name in the agent's file ([`DEFAULT_ENTRY`]).
    pub entry: String,
    /// Role of the paired client (else the default role).
    pub role: Option<String>,
    /// The longest tool name the agent is handed, instead of what its prefix and cap leave
    /// ([`Client::name_budget`]).
    pub name_budget: Option<usize>,
    /// Whether an agent's own CLI may do the edit where it has one (tests of the file
    /// formats turn it off).
    pub use_cli: bool,
    /// The `switchboard` program Claude Desktop starts (`switchboard connect`).
    pub program: PathBuf,
    /// Whether Claude Desktop's bridge token may go to the OS keychain (else into the
    /// entry's env; tests keep the keychain out of it).
    pub keychain: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scope: Scope::User,
            entry: DEFAULT_ENTRY.into(),
            role: None,
            name_budget: None,
            use_cli: true,
            program: std::env::current_exe().unwrap_or_else(|_| "switchboard".into()),
            keychain: true,
        }
    }
}

/// What a setup (or its removal) did, for the CLI to print and the API to answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub client: Client,
    pub path: PathBuf,
    /// Whether the file changed (false: it already said this).
    pub changed: bool,
    pub backup: Option<PathBuf>,
    /// The paired client's name (setup) or the revoked one's (removal).
    pub paired: Option<String>,
    pub revoked: Option<String>,
    /// `"file"`, or the agent's CLI that made the change.
    pub via: String,
    /// Anything the person should know (a token kept in the file's env, a restart needed).
    pub notes: Vec<String>,
}

impl Report {
    /// What happened, as lines for a person (the CLI prints them).
    pub fn lines(&self, entry: &str) -> Vec<String> {
        let label = self.client.label();
        let path = self.path.display();
        let mut out = Vec::new();
        match (self.changed, &self.revoked, &self.paired) {
            (false, _, Some(name)) => out.push(format!(
                "{label} is already connected ({path}, entry {entry:?}, paired as {name}); nothing changed"
            )),
            (false, _, None) => {}
            (true, _, Some(name)) => {
                out.push(format!("{label}: wrote entry {entry:?} in {path} (via {})", self.via));
                out.push(format!("paired as {name}"));
            }
            (true, _, None) => {
                out.push(format!("{label}: removed entry {entry:?} from {path} (via {})", self.via));
            }
        }
        if let Some(old) = &self.revoked {
            out.push(format!("revoked the token of {old}"));
        }
        if let Some(b) = &self.backup {
            out.push(format!("backup of the previous file: {}", b.display()));
        }
        out.extend(self.notes.iter().cloned());
        out
    }
}

/// Who pairs and revokes: the running gateway over its control socket (the CLI), or the
/// gateway itself (the dashboard's buttons).
#[derive(Debug, Clone)]
pub enum Pairer {
    Control { data_dir: PathBuf },
    Local(Pairing),
}

impl Pairer {
    /// The gateway's MCP endpoint that entries name.
    pub fn url(&self) -> Result<String, SetupError> {
        match self {
            Self::Local(p) => Ok(format!("http://127.0.0.1:{}/mcp", p.port())),
            Self::Control { data_dir } => crate::discovery::Discovery::read(data_dir)
                .map(|d| d.url)
                .ok_or_else(|| {
                    SetupError::Pairing(format!(
                        "no running Switchboard announces itself in {} (mcp.json); start it first",
                        data_dir.display()
                    ))
                }),
        }
    }

    /// A new token for a client named `name`, with its tool-name budget; returns the token
    /// and the name it got (made unique).
    async fn pair(
        &self,
        name: &str,
        role: Option<&str>,
        budget: usize,
    ) -> Result<(String, String), SetupError> {
        match self {
            Self::Local(p) => {
                let auth = p.auth();
                let code = auth
                    .issue_code(role.map(str::to_owned))
                    .map_err(|e| SetupError::Pairing(e.to_string()))?;
                let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
                let (token, client) = auth
                    .pair(loopback, &code, Some(name.to_owned()), None)
                    .await
                    .map_err(|e| SetupError::Pairing(e.to_string()))?;
                auth.set_name_budget(&client.name, Some(budget))
                    .await
                    .map_err(|e| SetupError::Pairing(e.to_string()))?;
                Ok((token, client.name))
            }
            Self::Control { data_dir } => {
                let reply = control(data_dir, json!({"op": "pair", "role": role})).await?;
                let (Some(code), Some(pair_url)) =
                    (reply["code"].as_str(), reply["pair_url"].as_str())
                else {
                    return Err(SetupError::Pairing(format!("unexpected answer {reply}")));
                };
                let answer: Value = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| SetupError::Pairing(e.to_string()))?
                    .post(pair_url)
                    .json(&json!({"code": code, "name": name, "name_budget": budget}))
                    .send()
                    .await
                    .map_err(|e| SetupError::Pairing(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| SetupError::Pairing(e.to_string()))?;
                match (answer["token"].as_str(), answer["name"].as_str()) {
                    (Some(t), Some(n)) => Ok((t.to_owned(), n.to_owned())),
                    _ => Err(SetupError::Pairing(format!("refused: {answer}"))),
                }
            }
        }
    }

    /// The paired client `token` belongs to, if it is still paired.
    async fn verify(&self, token: &str) -> Result<Option<String>, SetupError> {
        match self {
            Self::Local(p) => Ok(p.auth().verify(token).map(|c| c.name)),
            Self::Control { data_dir } => {
                match control(data_dir, json!({"op": "verify", "token": token})).await {
                    Ok(reply) => Ok(reply["name"].as_str().map(str::to_owned)),
                    Err(SetupError::Pairing(e)) if e.contains("not a paired client") => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Revokes the client `name`; `false` if there was none.
    async fn unpair(&self, name: &str) -> Result<bool, SetupError> {
        match self {
            Self::Local(p) => p
                .unpair(name)
                .await
                .map_err(|e| SetupError::Pairing(e.to_string())),
            Self::Control { data_dir } => {
                match control(data_dir, json!({"op": "unpair", "name": name})).await {
                    Ok(_) => Ok(true),
                    Err(SetupError::Pairing(e)) if e.contains("no paired client") => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// One request to the control socket; an answer with `ok: false` is an error.
async fn control(data_dir: &Path, req: Value) -> Result<Value, SetupError> {
    #[cfg(unix)]
    {
        let reply = crate::pairing::control(data_dir, req)
            .await
            .map_err(SetupError::Pairing)?;
        if reply["ok"] != true {
            return Err(SetupError::Pairing(
                reply["error"].as_str().unwrap_or("refused").to_owned(),
            ));
        }
        Ok(reply)
    }
    #[cfg(not(unix))]
    {
        let _ = (data_dir, req);
        Err(SetupError::Pairing(
            "the control socket is not available on this platform yet; use the dashboard's \
             Connect button"
                .into(),
        ))
    }
}

/// An agent as detection sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detected {
    pub client: Client,
    pub label: &'static str,
    /// Its config dir or file exists.
    pub installed: bool,
    /// Its user config has an entry naming this gateway whose token is paired.
    pub connected: bool,
    /// The name of that entry.
    pub entry: Option<String>,
    pub path: Option<PathBuf>,
    /// Whether it has servers of its own that `adopt` would move (outside our entry).
    pub own_servers: usize,
}

/// Every agent Switchboard knows, installed or not, and whether it is connected to `url`.
pub async fn detect(places: &Places, pairer: &Pairer, url: &str) -> Vec<Detected> {
    let mut out = Vec::new();
    for client in Client::ALL {
        let path = client.config_path(places, Scope::User);
        let entries = path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| edit::entries(client.format(), &t, client.table()).ok())
            .unwrap_or_default();
        let mut entry = None;
        for (name, value) in &entries {
            let Some((u, token)) = client.read_entry(value) else {
                continue;
            };
            if u != url {
                continue;
            }
            let token = match token {
                Some(t) => Some(t),
                None => crate::connect::token(url).await.ok(),
            };
            if let Some(t) = token
                && matches!(pairer.verify(&t).await, Ok(Some(_)))
            {
                entry = Some(name.clone());
                break;
            }
        }
        let own_servers = entries
            .iter()
            .filter(|(_, v)| client.read_entry(v).is_none_or(|(u, _)| u != url))
            .count();
        out.push(Detected {
            client,
            label: client.label(),
            installed: client.installed(places),
            connected: entry.is_some(),
            entry,
            path,
            own_servers,
        });
    }
    out
}

/// The file's text, `None` if it does not exist.
pub(crate) fn read_file(path: &Path) -> Result<Option<String>, SetupError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SetupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Refuses a file (or the directory of a new one) that cannot be written, before anything
/// is paired.
pub(crate) fn check_writable(path: &Path) -> Result<(), SetupError> {
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().readonly() => Err(SetupError::ReadOnly(path.to_path_buf())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut dir = path.parent();
            while let Some(d) = dir {
                match std::fs::metadata(d) {
                    Ok(m) if m.permissions().readonly() => {
                        return Err(SetupError::ReadOnly(d.to_path_buf()));
                    }
                    Ok(_) => return Ok(()),
                    Err(_) => dir = d.parent(),
                }
            }
            Ok(())
        }
        Err(source) => Err(SetupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Copies `path` to `<name>.switchboard-<ms>.bak` beside it (the exact bytes, same mode);
/// `None` when there is no file yet.
pub(crate) fn backup(path: &Path) -> Result<Option<PathBuf>, SetupError> {
    if !path.exists() {
        return Ok(None);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stamp = chrono::Utc::now().timestamp_millis();
    let mut target = path.with_file_name(format!("{name}.switchboard-{stamp}.bak"));
    while target.exists() {
        stamp += 1;
        target = path.with_file_name(format!("{name}.switchboard-{stamp}.bak"));
    }
    std::fs::copy(path, &target).map_err(|source| SetupError::Write {
        path: target.clone(),
        source,
    })?;
    Ok(Some(target))
}

/// Replaces (or creates) `path` with `text` through a temp file and a rename, keeping the
/// file's mode; a new file is owner-only (it holds a token).
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), SetupError> {
    let err = |source| SetupError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.switchboard.tmp"));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        if let Ok(m) = std::fs::metadata(path) {
            file.set_permissions(m.permissions())?;
        }
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// The agent's CLI on `PATH`, if it is there.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs an agent's CLI as if in `places` (its HOME), bounded by [`CLI_TIMEOUT`].
async fn run_cli(program: &Path, args: &[&str], places: &Places) -> Result<String, SetupError> {
    let shown = format!(
        "{} {}",
        program.file_name().unwrap_or_default().to_string_lossy(),
        args.first().copied().unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&places.project)
        .env("HOME", &places.home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .map_err(|_| SetupError::Cli {
            program: shown.clone(),
            message: format!("no answer within {} s", CLI_TIMEOUT.as_secs()),
        })?
        .map_err(|e| SetupError::Cli {
            program: shown.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SetupError::Cli {
            program: shown,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The token of an entry of ours: in the entry, or (Claude Desktop's bridge) in the keychain.
async fn entry_token(client: Client, entry: &Value) -> Option<(String, String)> {
    let (url, token) = client.read_entry(entry)?;
    let token = match token {
        Some(t) => t,
        None => crate::connect::token(&url).await.ok()?,
    };
    Some((url, token))
}

/// Connects `client`: pairs a token for it (unless its entry already works) and writes
/// Switchboard's entry into its config for `opts.scope`.
pub async fn connect(
    places: &Places,
    client: Client,
    opts: &Options,
    pairer: &Pairer,
) -> Result<Report, SetupError> {
    let path = client
        .config_path(places, opts.scope)
        .ok_or(SetupError::NoProjectScope(client.label()))?;
    let url = pairer.url()?;
    let text = read_file(&path)?.unwrap_or_default();
    let malformed = |error| SetupError::Malformed {
        path: path.clone(),
        error,
    };
    let entries = edit::entries(client.format(), &text, client.table()).map_err(malformed)?;
    let mut report = Report {
        client,
        path: path.clone(),
        changed: false,
        backup: None,
        paired: None,
        revoked: None,
        via: "file".into(),
        notes: Vec::new(),
    };
    // Already connected with a working token: nothing to do.
    let mut replaced = None;
    if let Some(current) = entries.get(&opts.entry)
        && let Some((u, token)) = entry_token(client, current).await
        && let Some(name) = pairer.verify(&token).await?
    {
        let bridge = Bridge {
            program: opts.program.to_string_lossy().into_owned(),
            token_in_keychain: current.get("env").is_none(),
        };
        if u == url && client.entry(&url, &token, &bridge) == *current {
            report.paired = Some(name);
            return Ok(report);
        }
        replaced = Some(name);
    }
    check_writable(&path)?;
    let budget = opts
        .name_budget
        .unwrap_or_else(|| client.name_budget(&opts.entry))
        .clamp(clients::MIN_BUDGET, crate::mcp::names::MAX_LEN);
    let (token, name) = pairer
        .pair(client.id(), opts.role.as_deref(), budget)
        .await?;
    let written = write_entry(
        places,
        client,
        opts,
        &path,
        &text,
        &url,
        &token,
        &mut report,
    )
    .await;
    if let Err(e) = written {
        // no token stays paired for an entry that was never written
        let _ = pairer.unpair(&name).await;
        return Err(e);
    }
    if let Some(old) = replaced
        && old != name
    {
        pairer.unpair(&old).await?;
        report.revoked = Some(old);
    }
    report.paired = Some(name);
    report.changed = true;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn write_entry(
    places: &Places,
    client: Client,
    opts: &Options,
    path: &Path,
    text: &str,
    url: &str,
    token: &str,
    report: &mut Report,
) -> Result<(), SetupError> {
    let mut bridge = Bridge {
        program: opts.program.to_string_lossy().into_owned(),
        token_in_keychain: false,
    };
    if client == Client::ClaudeDesktop && opts.keychain {
        match crate::connect::store_token(url, token).await {
            Ok(()) => bridge.token_in_keychain = true,
            Err(e) => report.notes.push(format!(
                "no OS keychain ({e}): the bridge's token is in the entry's env \
                 (SWITCHBOARD_TOKEN), readable by whoever can read {}",
                path.display()
            )),
        }
    }
    let entry = client.entry(url, token, &bridge);
    report.backup = backup(path)?;
    let cli = match (opts.use_cli, opts.scope, client.cli()) {
        (true, Scope::User, Some(name)) => find_program(name),
        _ => None,
    };
    if let Some(program) = cli {
        // Claude Code's own `claude mcp add-json`; an old entry goes first (it refuses to
        // overwrite one).
        let json = serde_json::to_string(&entry).expect("entry serializes");
        if read_file(path)?
            .and_then(|t| edit::entries(client.format(), &t, client.table()).ok())
            .is_some_and(|e| e.contains_key(&opts.entry))
        {
            run_cli(
                &program,
                &["mcp", "remove", "--scope", "user", &opts.entry],
                places,
            )
            .await?;
        }
        run_cli(
            &program,
            &["mcp", "add-json", "--scope", "user", &opts.entry, &json],
            places,
        )
        .await?;
        report.via = format!("{} mcp add-json", program.display());
        return Ok(());
    }
    let new = edit::upsert(client.format(), text, client.table(), &opts.entry, &entry).map_err(
        |error| SetupError::Malformed {
            path: path.to_path_buf(),
            error,
        },
    )?;
    if let Some(new) = new {
        write_file(path, &new)?;
    }
    if client == Client::ClaudeDesktop {
        report
            .notes
            .push("restart Claude Desktop to load the new entry".into());
    }
    Ok(())
}

/// Disconnects `client`: removes Switchboard's entry from its config and revokes the token.
pub async fn disconnect(
    places: &Places,
    client: Client,
    opts: &Options,
    pairer: &Pairer,
) -> Result<Report, SetupError> {
    let path = client
        .config_path(places, opts.scope)
        .ok_or(SetupError::NoProjectScope(client.label()))?;
    let mut report = Report {
        client,
        path: path.clone(),
        changed: false,
        backup: None,
        paired: None,
        revoked: None,
        via: "file".into(),
        notes: Vec::new(),
    };
    let Some(text) = read_file(&path)? else {
        report
            .notes
            .push("no config file; nothing to remove".into());
        return Ok(report);
    };
    let entries = edit::entries(client.format(), &text, client.table()).map_err(|error| {
        SetupError::Malformed {
            path: path.clone(),
            error,
        }
    })?;
    let Some(current) = entries.get(&opts.entry) else {
        report
            .notes
            .push(format!("no entry {:?}; nothing to remove", opts.entry));
        return Ok(report);
    };
    check_writable(&path)?;
    let paired = match entry_token(client, current).await {
        Some((_, token)) => pairer.verify(&token).await?,
        None => None,
    };
    report.backup = backup(&path)?;
    let cli = match (opts.use_cli, opts.scope, client.cli()) {
        (true, Scope::User, Some(name)) => find_program(name),
        _ => None,
    };
    if let Some(program) = cli {
        run_cli(
            &program,
            &["mcp", "remove", "--scope", "user", &opts.entry],
            places,
        )
        .await?;
        report.via = format!("{} mcp remove", program.display());
    } else if let Some(new) = edit::remove(client.format(), &text, client.table(), &opts.entry)
        .map_err(|error| SetupError::Malformed {
            path: path.clone(),
            error,
        })?
    {
        write_file(&path, &new)?;
    }
    report.changed = true;
    if let Some(name) = paired
        && pairer.unpair(&name).await?
    {
        report.revoked = Some(name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
