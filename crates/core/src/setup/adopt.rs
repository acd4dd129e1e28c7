//! `switchboard adopt <agent>` (and the dashboard's Adopt button): the agent's own MCP
//! servers, stdio and remote, move into Switchboard's config, and the agent keeps one entry,
//! Switchboard's. Run your servers once, from every agent.
//!
//! Secrets do not move as text: every env value and every header value of an adopted entry
//! goes to the secret store (the OS keychain) under [`SECRET_SERVICE`], and Switchboard's
//! config names it (`secret_env = { KEY = { keychain = "…" } }`, `headers = { … }`).
//! The agent's file is backed up first; [`undo`] puts those exact bytes back, takes the
//! adopted servers out of Switchboard's config and revokes the agent's token. What was
//! adopted is remembered in `adopted.json` in the data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, Item};

use super::{
    Client, EditError, Options, Pairer, Places, Report, SetupError, backup, check_writable,
    connect, edit, read_file, write_file,
};
use crate::auth::store::{SecretStore, blocking};
use crate::config::{HeaderValue, ServerConfig};

/// Keychain service of the secrets adopt moves (account: `<server>.env.<VAR>` or
/// `<server>.header.<Name>`).
pub const SECRET_SERVICE: &str = "switchboard-adopted";

/// What adopt remembers, by agent id, in the data dir.
const STATE_FILE: &str = "adopted.json";

/// Where adopted servers go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Switchboard's config file (a running gateway watches it and starts them).
    pub config: PathBuf,
    pub secrets: Arc<dyn SecretStore>,
    /// Where `adopted.json` is kept: the gateway's data dir.
    pub state_dir: PathBuf,
}

/// What adopt did.
#[derive(Debug, Clone, Serialize)]
pub struct Adopted {
    pub client: Client,
    pub path: PathBuf,
    /// The agent's file before adopt: what [`undo`] restores.
    pub backup: PathBuf,
    /// `(name in the agent, name in Switchboard)`.
    pub servers: Vec<(String, String)>,
    /// Left in the agent's file, with why.
    pub skipped: Vec<(String, String)>,
    /// Values moved to the secret store.
    pub secrets: usize,
    pub setup: Report,
}

/// What undo did.
#[derive(Debug, Clone, Serialize)]
pub struct Undone {
    pub client: Client,
    pub path: PathBuf,
    /// Servers taken out of Switchboard's config.
    pub servers: Vec<String>,
    pub revoked: Option<String>,
}

impl Adopted {
    /// What adopt did, in words (`config`: Switchboard's config file it wrote to).
    pub fn lines(&self, entry: &str, config: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for (from, to) in &self.servers {
            out.push(format!("adopted {from} as {to}"));
        }
        for (from, why) in &self.skipped {
            out.push(format!("left {from} in {}: {why}", self.path.display()));
        }
        out.push(format!(
            "{} secret(s) moved to the OS keychain; {} now runs them (backup: {}; undo: switchboard adopt {} --undo)",
            self.secrets,
            config.display(),
            self.backup.display(),
            self.client.id()
        ));
        out.extend(self.setup.lines(entry));
        out
    }
}

impl Undone {
    /// What undo did, in words (`config`: Switchboard's config file it took servers out of).
    pub fn lines(&self, config: &Path) -> Vec<String> {
        let mut out = vec![format!(
            "{}: {} restored as it was",
            self.client.label(),
            self.path.display()
        )];
        for s in &self.servers {
            out.push(format!("removed {s} from {}", config.display()));
        }
        if let Some(r) = &self.revoked {
            out.push(format!("revoked the token of {r}"));
        }
        out
    }
}

/// The agents (ids) whose servers were adopted and not undone yet.
pub fn adopted(state_dir: &Path) -> Result<BTreeSet<String>, SetupError> {
    Ok(load_state(state_dir)?.into_keys().collect())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    backup: PathBuf,
    config: PathBuf,
    servers: Vec<String>,
}

fn load_state(dir: &Path) -> Result<BTreeMap<String, Record>, SetupError> {
    let path = dir.join(STATE_FILE);
    match read_file(&path)? {
        None => Ok(BTreeMap::new()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| SetupError::Adopt(format!("{} is not readable: {e}", path.display()))),
    }
}

fn save_state(dir: &Path, state: &BTreeMap<String, Record>) -> Result<(), SetupError> {
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    write_file(&dir.join(STATE_FILE), &text)
}

/// Moves `server`'s env values and header values into `secrets`; the config keeps where
/// they are. Returns how many moved.
async fn move_secrets(
    server: &mut ServerConfig,
    secrets: &Arc<dyn SecretStore>,
) -> Result<usize, SetupError> {
    let mut moved = 0;
    let put = |account: String, secret: String| {
        let store = secrets.clone();
        async move {
            let a = account.clone();
            blocking("storing an adopted secret", move || {
                store.set_secret(SECRET_SERVICE, &a, &secret)
            })
            .await
            .map_err(|e| {
                SetupError::Adopt(format!("cannot keep {account} in the keychain: {e}"))
            })?;
            Ok::<_, SetupError>(HeaderValue::Keychain {
                service: SECRET_SERVICE.into(),
                account,
                prefix: String::new(),
            })
        }
    };
    for (var, value) in std::mem::take(&mut server.env) {
        let source = put(format!("{}.env.{var}", server.name), value).await?;
        server.secret_env.insert(var, source);
        moved += 1;
    }
    let headers = std::mem::take(&mut server.headers);
    for (name, value) in headers {
        let value = match value {
            HeaderValue::Plain(text) => {
                let (prefix, secret) = match text.strip_prefix("Bearer ") {
                    Some(rest) => ("Bearer ", rest.to_owned()),
                    None => ("", text),
                };
                moved += 1;
                match put(format!("{}.header.{name}", server.name), secret).await? {
                    HeaderValue::Keychain {
                        service, account, ..
                    } => HeaderValue::Keychain {
                        service,
                        account,
                        prefix: prefix.into(),
                    },
                    other => other,
                }
            }
            other => other,
        };
        server.headers.insert(name, value);
    }
    Ok(moved)
}

/// A free Switchboard server name close to `raw`.
fn free_name(raw: &str, taken: &BTreeSet<String>) -> String {
    let base = crate::import::sanitize(raw);
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) || crate::config::validate_server_name(&name).is_err() {
        name = format!("{}-{n}", base.chars().take(29).collect::<String>());
        n += 1;
    }
    name
}

/// Adopts `client`'s own servers into Switchboard (see the module docs).
pub async fn adopt(
    places: &Places,
    client: Client,
    opts: &Options,
    pairer: &Pairer,
    target: &Target,
) -> Result<Adopted, SetupError> {
    let path = client
        .config_path(places, opts.scope)
        .ok_or(SetupError::NoProjectScope(client.label()))?;
    let mut state = load_state(&target.state_dir)?;
    if state.contains_key(client.id()) {
        return Err(SetupError::Adopt(format!(
            "{}'s servers were adopted already; undo that first (switchboard adopt {} --undo)",
            client.label(),
            client.id()
        )));
    }
    let Some(text) = read_file(&path)? else {
        return Err(SetupError::Adopt(format!(
            "{} has no config at {}; nothing to adopt",
            client.label(),
            path.display()
        )));
    };
    let malformed = |error| SetupError::Malformed {
        path: path.clone(),
        error,
    };
    let entries = edit::entries(client.format(), &text, client.table()).map_err(malformed)?;
    let url = pairer.url()?;
    let config_text = read_file(&target.config)?.unwrap_or_default();
    let current = crate::Config::parse(&config_text).map_err(|message| SetupError::Malformed {
        path: target.config.clone(),
        error: EditError::Malformed(message),
    })?;
    let mut taken: BTreeSet<String> = current.servers.iter().map(|s| s.name.clone()).collect();
    let mut servers = Vec::new();
    let mut skipped = Vec::new();
    for (name, value) in &entries {
        if *name == opts.entry || client.read_entry(value).is_some_and(|(u, _)| u == url) {
            continue;
        }
        let sb_name = free_name(name, &taken);
        match client.read_server(&sb_name, value) {
            Ok(s) => {
                taken.insert(sb_name);
                servers.push((name.clone(), s));
            }
            Err(why) => skipped.push((name.clone(), why)),
        }
    }
    if servers.is_empty() {
        return Err(SetupError::Adopt(format!(
            "{} has no servers Switchboard can run in {}{}",
            client.label(),
            path.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    skipped
                        .iter()
                        .map(|(n, why)| format!("{n}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        )));
    }
    check_writable(&path)?;
    check_writable(&target.config)?;

    let mut secrets = 0;
    for (_, server) in &mut servers {
        secrets += move_secrets(server, &target.secrets).await?;
    }
    let mut new_config = config_text.clone();
    for (_, server) in &servers {
        new_config = crate::import::add_server(&new_config, server).map_err(|message| {
            SetupError::Malformed {
                path: target.config.clone(),
                error: EditError::Shape(message),
            }
        })?;
    }
    let undo_point = backup(&path)?.expect("the file exists");
    let mut agent_text = text.clone();
    for (name, _) in &servers {
        if let Some(t) =
            edit::remove(client.format(), &agent_text, client.table(), name).map_err(malformed)?
        {
            agent_text = t;
        }
    }
    write_file(&target.config, &new_config)?;
    write_file(&path, &agent_text)?;
    let setup_opts = Options {
        use_cli: false,
        ..opts.clone()
    };
    let setup = match connect(places, client, &setup_opts, pairer).await {
        Ok(r) => r,
        Err(e) => {
            // put both files back as they were
            let _ = write_file(&target.config, &config_text);
            let _ = write_file(&path, &text);
            return Err(e);
        }
    };
    let adopted: Vec<(String, String)> = servers
        .iter()
        .map(|(from, s)| (from.clone(), s.name.clone()))
        .collect();
    state.insert(
        client.id().to_owned(),
        Record {
            path: path.clone(),
            backup: undo_point.clone(),
            config: target.config.clone(),
            servers: adopted.iter().map(|(_, n)| n.clone()).collect(),
        },
    );
    save_state(&target.state_dir, &state)?;
    Ok(Adopted {
        client,
        path,
        backup: undo_point,
        servers: adopted,
        skipped,
        secrets,
        setup,
    })
}

/// Removes the `[[servers]]` tables named in `names` from the TOML text, keeping the rest.
fn remove_servers(text: &str, names: &[String]) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    if let Some(tables) = doc
        .get_mut("servers")
        .and_then(Item::as_array_of_tables_mut)
    {
        tables.retain(|t| {
            !t.get("name")
                .and_then(Item::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        });
    }
    Ok(doc.to_string())
}

/// Undoes [`adopt`]: the agent's file as it was, byte for byte; the adopted servers out of
/// Switchboard's config; the agent's token revoked.
pub async fn undo(
    client: Client,
    opts: &Options,
    pairer: &Pairer,
    target: &Target,
) -> Result<Undone, SetupError> {
    let mut state = load_state(&target.state_dir)?;
    let Some(record) = state.get(client.id()).cloned() else {
        return Err(SetupError::Adopt(format!(
            "nothing was adopted from {}",
            client.label()
        )));
    };
    let original = std::fs::read(&record.backup).map_err(|source| SetupError::Read {
        path: record.backup.clone(),
        source,
    })?;
    let original = String::from_utf8(original)
        .map_err(|_| SetupError::Adopt(format!("{} is not UTF-8", record.backup.display())))?;
    check_writable(&record.path)?;
    check_writable(&record.config)?;
    // our entry's token, to revoke once the file is back
    let paired = match read_file(&record.path)?
        .and_then(|t| edit::entries(client.format(), &t, client.table()).ok())
        .and_then(|e| e.get(&opts.entry).cloned())
    {
        Some(entry) => match super::entry_token(client, &entry).await {
            Some((_, token)) => pairer.verify(&token).await?,
            None => None,
        },
        None => None,
    };
    let config_text = read_file(&record.config)?.unwrap_or_default();
    let config_text =
        remove_servers(&config_text, &record.servers).map_err(|message| SetupError::Malformed {
            path: record.config.clone(),
            error: EditError::Malformed(message),
        })?;
    write_file(&record.path, &original)?;
    write_file(&record.config, &config_text)?;
    let mut revoked = None;
    if let Some(name) = paired
        && pairer.unpair(&name).await?
    {
        revoked = Some(name);
    }
    state.remove(client.id());
    save_state(&target.state_dir, &state)?;
    Ok(Undone {
        client,
        path: record.path,
        servers: record.servers,
        revoked,
    })
}
