//! Importing servers from other MCP clients' configs: Claude Desktop's
//! `claude_desktop_config.json` and Cursor's `mcp.json` (both `{"mcpServers": {name: {...}}}`).
//!
//! The servers are appended to Switchboard's TOML config as `[[servers]]` tables, keeping the
//! file's comments and layout; a running gateway picks the change up live.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use crate::config::{HeaderValue, ServerConfig, validate_server_name};

#[derive(Debug, Deserialize)]
struct ClientFile {
    #[serde(rename = "mcpServers", default)]
    mcp_servers: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ClientServer {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    /// Remote: `url` (Claude Desktop, Cursor), `serverUrl` (Windsurf), `httpUrl` (Gemini).
    #[serde(alias = "serverUrl", alias = "httpUrl")]
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// A server as read from a client config: its original name and the entry, or why it cannot
/// be imported.
pub type Entry = (String, Result<ServerConfig, String>);

/// What an import did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub added: Vec<String>,
    /// Name and why it was not added.
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an MCP client config: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where Claude Desktop and Cursor keep their configs on this platform, if they exist.
pub fn known_client_configs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(base) = directories::BaseDirs::new() {
        out.push(
            base.config_dir()
                .join("Claude")
                .join("claude_desktop_config.json"),
        );
        out.push(base.home_dir().join(".cursor").join("mcp.json"));
    }
    out.into_iter().filter(|p| p.is_file()).collect()
}

/// A name Switchboard accepts, close to `raw`.
pub(crate) fn sanitize(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("__") || name.contains("--") {
        name = name.replace("__", "_").replace("--", "-");
    }
    let mut name = name.trim_matches(|c| c == '_' || c == '-').to_owned();
    name.truncate(32);
    let name = name.trim_end_matches('_').to_owned();
    if name.is_empty() || name == "switchboard" {
        format!("imported-{}", name.len())
    } else {
        name
    }
}

/// Reads a client config into server entries (not yet merged).
pub(crate) fn read_client_config(path: &Path) -> Result<Vec<Entry>, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: ClientFile = serde_json::from_str(&text).map_err(|e| ImportError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(file
        .mcp_servers
        .into_iter()
        .map(|(name, v)| {
            let entry = serde_json::from_value::<ClientServer>(v)
                .map_err(|e| format!("not understood: {e}"))
                .and_then(|s| match (s.command, s.url) {
                    (Some(command), _) => Ok(ServerConfig {
                        name: sanitize(&name),
                        command,
                        args: s.args,
                        env: s.env,
                        cwd: s.cwd,
                        enabled: !s.disabled,
                        ..ServerConfig::default()
                    }),
                    (None, Some(url)) if s.kind.as_deref() == Some("sse") => Err(format!(
                        "{url} speaks the old SSE transport, which Switchboard does not"
                    )),
                    (None, Some(url)) => Ok(ServerConfig {
                        name: sanitize(&name),
                        url: Some(url),
                        headers: s
                            .headers
                            .into_iter()
                            .map(|(k, v)| (k, crate::config::HeaderValue::Plain(v)))
                            .collect(),
                        enabled: !s.disabled,
                        ..ServerConfig::default()
                    }),
                    (None, None) => Err("no command".into()),
                });
            (name, entry)
        })
        .collect())
}

/// Appends the servers of `sources` to the TOML config text `existing`. Servers whose command
/// and arguments are already configured are skipped; clashing names get a numeric suffix.
pub(crate) fn merge(existing: &str, sources: &[Entry]) -> Result<(String, Outcome), String> {
    let mut doc: DocumentMut = existing.parse().map_err(|e| format!("{e}"))?;
    let current = crate::Config::parse(existing)?;
    let mut names: BTreeSet<String> = current.servers.iter().map(|s| s.name.clone()).collect();
    let mut outcome = Outcome::default();
    if !doc.contains_key("servers") {
        doc.insert("servers", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let Some(tables) = doc["servers"].as_array_of_tables_mut() else {
        return Err("`servers` in the config is not an array of tables".into());
    };
    for (original, entry) in sources {
        let server = match entry {
            Ok(s) => s,
            Err(why) => {
                outcome.skipped.push((original.clone(), why.clone()));
                continue;
            }
        };
        if current
            .servers
            .iter()
            .any(|s| s.command == server.command && s.args == server.args && s.url == server.url)
        {
            outcome
                .skipped
                .push((original.clone(), "already configured".into()));
            continue;
        }
        let mut name = server.name.clone();
        let mut n = 2;
        while names.contains(&name) || validate_server_name(&name).is_err() {
            name = format!("{}-{n}", server.name.chars().take(29).collect::<String>());
            n += 1;
        }
        names.insert(name.clone());
        let t = server_table(&name, server);
        tables.push(t);
        outcome.added.push(name);
    }
    let text = doc.to_string();
    // what we wrote must load
    crate::Config::parse(&text)?.validate()?;
    Ok((text, outcome))
}

/// The `[[servers]]` table of `server`, named `name`.
fn server_table(name: &str, server: &ServerConfig) -> Table {
    let mut t = Table::new();
    t.insert("name", value(name));
    if !server.command.is_empty() {
        t.insert("command", value(server.command.clone()));
    }
    if let Some(url) = &server.url {
        t.insert("url", value(url.clone()));
    }
    if !server.args.is_empty() {
        t.insert("args", value(server.args.iter().collect::<Array>()));
    }
    if !server.env.is_empty() {
        let mut env = InlineTable::new();
        for (k, v) in &server.env {
            env.insert(k, v.into());
        }
        t.insert("env", value(env));
    }
    if !server.secret_env.is_empty() {
        t.insert("secret_env", value(sourced_table(&server.secret_env)));
    }
    if let Some(cwd) = &server.cwd {
        t.insert("cwd", value(cwd.to_string_lossy().into_owned()));
    }
    if !server.headers.is_empty() {
        t.insert("headers", value(sourced_table(&server.headers)));
    }
    if !server.enabled {
        t.insert("enabled", value(false));
    }
    match server.start {
        Some(crate::config::StartMode::Always) => {
            t.insert("start", value("always"));
        }
        Some(crate::config::StartMode::OnDemand) => {
            t.insert("start", value("on_demand"));
        }
        None => {}
    }
    t
}

/// `{ NAME = "text", OTHER = { keychain = "service/account", prefix = "Bearer " } }`.
fn sourced_table(values: &std::collections::BTreeMap<String, HeaderValue>) -> InlineTable {
    let mut out = InlineTable::new();
    for (k, v) in values {
        let item: toml_edit::Value = match v {
            HeaderValue::Plain(text) => text.into(),
            HeaderValue::Keychain {
                service,
                account,
                prefix,
            } => {
                let mut t = InlineTable::new();
                t.insert("keychain", format!("{service}/{account}").into());
                if !prefix.is_empty() {
                    t.insert("prefix", prefix.into());
                }
                t.into()
            }
            HeaderValue::Env { var, prefix } => {
                let mut t = InlineTable::new();
                t.insert("env", var.into());
                if !prefix.is_empty() {
                    t.insert("prefix", prefix.into());
                }
                t.into()
            }
        };
        out.insert(k, item);
    }
    out
}

/// Appends one server to the TOML config text, keeping comments; its name must be free.
pub(crate) fn add_server(existing: &str, server: &ServerConfig) -> Result<String, String> {
    server.validate()?;
    let current = crate::Config::parse(existing)?;
    if current.servers.iter().any(|s| s.name == server.name) {
        return Err(format!("a server named {:?} already exists", server.name));
    }
    let mut doc: DocumentMut = existing.parse().map_err(|e| format!("{e}"))?;
    if !doc.contains_key("servers") {
        doc.insert("servers", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let Some(tables) = doc["servers"].as_array_of_tables_mut() else {
        return Err("`servers` in the config is not an array of tables".into());
    };
    tables.push(server_table(&server.name, server));
    let text = doc.to_string();
    crate::Config::parse(&text)?.validate()?;
    Ok(text)
}

/// Sets `enabled` of the server named `name` in the TOML config text, keeping comments.
pub(crate) fn set_enabled(existing: &str, name: &str, enabled: bool) -> Result<String, String> {
    let mut doc: DocumentMut = existing.parse().map_err(|e| format!("{e}"))?;
    let table = doc
        .get_mut("servers")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|t| {
            t.iter_mut()
                .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
        })
        .ok_or_else(|| format!("no server named {name:?} in the config file"))?;
    if enabled {
        table.remove("enabled");
    } else {
        table.insert("enabled", value(false));
    }
    let text = doc.to_string();
    crate::Config::parse(&text)?.validate()?;
    Ok(text)
}

/// Replaces `path` with `text` through a temp file and a rename: a watching gateway never
/// reads half a file.
pub(crate) fn write_config(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path))
}

/// Imports `sources` into the config file at `config` (created if missing).
pub fn import_into(config: &Path, sources: &[PathBuf]) -> Result<Outcome, ImportError> {
    let mut entries = Vec::new();
    for source in sources {
        entries.extend(read_client_config(source)?);
    }
    let existing = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ImportError::Read {
                path: config.to_path_buf(),
                source,
            });
        }
    };
    let (text, outcome) = merge(&existing, &entries).map_err(|message| ImportError::Parse {
        path: config.to_path_buf(),
        message,
    })?;
    if !outcome.added.is_empty() {
        write_config(config, &text).map_err(|source| ImportError::Write {
            path: config.to_path_buf(),
            source,
        })?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAUDE: &str = r#"{
      "mcpServers": {
        "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/u"]},
        "my server!": {"command": "/opt/my", "env": {"TOKEN": "x"}},
        "remote": {"url": "https://example.org/mcp"},
        "off": {"command": "off-server", "disabled": true}
      },
      "globalShortcut": "Ctrl+Space"
    }"#;

    #[test]
    fn claude_desktop_servers_are_appended_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("claude_desktop_config.json");
        std::fs::write(&src, CLAUDE).unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, "# my settings\nlisten = \"127.0.0.1:11391\"\n\n[[servers]]\nname = \"filesystem\"\ncommand = \"other\"\n").unwrap();

        let outcome = import_into(&cfg, std::slice::from_ref(&src)).unwrap();
        assert_eq!(
            outcome.added,
            vec!["filesystem-2", "my-server", "off", "remote"]
        );
        assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);

        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.starts_with("# my settings"), "{text}");
        let loaded = crate::Config::load(Some(&cfg)).unwrap();
        let names: Vec<_> = loaded.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["filesystem", "filesystem-2", "my-server", "off", "remote"]
        );
        assert_eq!(
            loaded.servers[4].url.as_deref(),
            Some("https://example.org/mcp")
        );
        assert_eq!(loaded.servers[1].args[0], "-y");
        assert_eq!(loaded.servers[2].env["TOKEN"], "x");
        assert!(!loaded.servers[3].enabled);

        // importing again adds nothing
        let again = import_into(&cfg, &[src]).unwrap();
        assert!(again.added.is_empty());
        assert_eq!(
            again
                .skipped
                .iter()
                .filter(|s| s.1 == "already configured")
                .count(),
            4
        );
    }

    #[test]
    fn a_file_that_is_not_a_client_config_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mcp.json");
        std::fs::write(&src, "[1,2]").unwrap();
        let err = import_into(&dir.path().join("c.toml"), std::slice::from_ref(&src)).unwrap_err();
        assert!(err.to_string().contains(&*src.to_string_lossy()), "{err}");
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(sanitize("My Server (beta)"), "My-Server-beta");
        assert_eq!(sanitize("a__b"), "a_b");
        assert!(validate_server_name(&sanitize("___")).is_ok());
    }
}
