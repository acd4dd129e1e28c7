//! The agents Switchboard can configure: where each keeps its MCP servers on each OS, in
//! which format, what Switchboard's entry looks like there, how it names tools, and how its
//! own entries read as Switchboard servers (adopt).
//!
//! Sources (each client's documentation): Claude Code `~/.claude.json` / `.mcp.json`
//! (`mcpServers`, `type = "http"`); Claude Desktop `<config dir>/Claude/
//! claude_desktop_config.json` (stdio only); Cursor `~/.cursor/mcp.json` (`url`); VS Code
//! `<config dir>/Code/User/mcp.json` / `.vscode/mcp.json` (`servers`, JSON with comments);
//! Windsurf `~/.codeium/windsurf/mcp_config.json` (`serverUrl`); Gemini CLI
//! `~/.gemini/settings.json` (`httpUrl`); Codex CLI `~/.codex/config.toml`
//! (`[mcp_servers.<name>]`, `url`, `http_headers`); Zed `~/.config/zed/settings.json`
//! (`%APPDATA%\Zed` on Windows; `context_servers`, JSON with comments).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::edit::Format;
use crate::config::{HeaderValue, ServerConfig};

/// Where a person's files are: the home dir, the platform's config dir (`~/.config`,
/// `~/Library/Application Support`, `%APPDATA%`), and the project dir for `--scope project`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    pub home: PathBuf,
    pub config_dir: PathBuf,
    pub project: PathBuf,
}

impl Places {
    /// This user's, with the current directory as the project.
    pub fn of_this_user() -> Option<Self> {
        let base = directories::BaseDirs::new()?;
        Some(Self {
            home: base.home_dir().to_path_buf(),
            config_dir: base.config_dir().to_path_buf(),
            project: std::env::current_dir().ok()?,
        })
    }

    /// Under one directory (tests): home and config dir inside it, as on Linux.
    pub fn under(root: &Path) -> Self {
        Self {
            home: root.to_path_buf(),
            config_dir: root.join(".config"),
            project: root.join("project"),
        }
    }
}

/// Which of an agent's config files: the person's, or the project's (checked in with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    User,
    Project,
}

/// An agent that Switchboard can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    ClaudeCode,
    ClaudeDesktop,
    Cursor,
    #[serde(rename = "vscode")]
    VsCode,
    Windsurf,
    GeminiCli,
    Codex,
    Zed,
}

impl Client {
    pub const ALL: [Client; 8] = [
        Client::ClaudeCode,
        Client::ClaudeDesktop,
        Client::Cursor,
        Client::VsCode,
        Client::Windsurf,
        Client::GeminiCli,
        Client::Codex,
        Client::Zed,
    ];

    /// What the CLI and the API call it: `claude-code`, `vscode`, …
    pub fn id(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::ClaudeDesktop => "claude-desktop",
            Self::Cursor => "cursor",
            Self::VsCode => "vscode",
            Self::Windsurf => "windsurf",
            Self::GeminiCli => "gemini-cli",
            Self::Codex => "codex",
            Self::Zed => "zed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::ClaudeCode => "Claude Code",
            Self::ClaudeDesktop => "Claude Desktop",
            Self::Cursor => "Cursor",
            Self::VsCode => "VS Code",
            Self::Windsurf => "Windsurf",
            Self::GeminiCli => "Gemini CLI",
            Self::Codex => "Codex CLI",
            Self::Zed => "Zed",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }

    pub(crate) fn format(self) -> Format {
        match self {
            Self::VsCode | Self::Zed => Format::Jsonc,
            Self::Codex => Format::Toml,
            _ => Format::Json,
        }
    }

    /// The table holding the servers, from the file's top.
    pub(crate) fn table(self) -> &'static [&'static str] {
        match self {
            Self::VsCode => &["servers"],
            Self::Zed => &["context_servers"],
            Self::Codex => &["mcp_servers"],
            _ => &["mcpServers"],
        }
    }

    /// The agent's own program, where it has a CLI that edits its config.
    pub(crate) fn cli(self) -> Option<&'static str> {
        match self {
            Self::ClaudeCode => Some("claude"),
            _ => None,
        }
    }

    /// Its config file for `scope`; `None` when it has no such scope.
    pub fn config_path(self, places: &Places, scope: Scope) -> Option<PathBuf> {
        let (home, config, project) = (&places.home, &places.config_dir, &places.project);
        match (self, scope) {
            (Self::ClaudeCode, Scope::User) => Some(home.join(".claude.json")),
            (Self::ClaudeCode, Scope::Project) => Some(project.join(".mcp.json")),
            (Self::ClaudeDesktop, Scope::User) => {
                Some(config.join("Claude").join("claude_desktop_config.json"))
            }
            (Self::Cursor, Scope::User) => Some(home.join(".cursor").join("mcp.json")),
            (Self::Cursor, Scope::Project) => Some(project.join(".cursor").join("mcp.json")),
            (Self::VsCode, Scope::User) => Some(config.join("Code").join("User").join("mcp.json")),
            (Self::VsCode, Scope::Project) => Some(project.join(".vscode").join("mcp.json")),
            (Self::Windsurf, Scope::User) => Some(
                home.join(".codeium")
                    .join("windsurf")
                    .join("mcp_config.json"),
            ),
            (Self::GeminiCli, Scope::User) => Some(home.join(".gemini").join("settings.json")),
            (Self::GeminiCli, Scope::Project) => {
                Some(project.join(".gemini").join("settings.json"))
            }
            (Self::Codex, Scope::User) => Some(home.join(".codex").join("config.toml")),
            (Self::Codex, Scope::Project) => Some(project.join(".codex").join("config.toml")),
            (Self::Zed, Scope::User) if cfg!(windows) => {
                Some(config.join("Zed").join("settings.json"))
            }
            (Self::Zed, Scope::User) if cfg!(target_os = "macos") => {
                Some(home.join(".config").join("zed").join("settings.json"))
            }
            (Self::Zed, Scope::User) => Some(config.join("zed").join("settings.json")),
            (Self::Zed, Scope::Project) => Some(project.join(".zed").join("settings.json")),
            (Self::ClaudeDesktop | Self::Windsurf, Scope::Project) => None,
        }
    }

    /// Whether the agent looks installed: its config file or its own directory exists.
    pub(crate) fn installed(self, places: &Places) -> bool {
        let home = &places.home;
        let dirs: Vec<PathBuf> = match self {
            Self::ClaudeCode => vec![home.join(".claude")],
            Self::ClaudeDesktop => vec![places.config_dir.join("Claude")],
            Self::Cursor => vec![home.join(".cursor")],
            Self::VsCode => vec![places.config_dir.join("Code").join("User")],
            Self::Windsurf => vec![home.join(".codeium").join("windsurf")],
            Self::GeminiCli => vec![home.join(".gemini")],
            Self::Codex => vec![home.join(".codex")],
            Self::Zed => self
                .config_path(places, Scope::User)
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .into_iter()
                .collect(),
        };
        dirs.iter().any(|d| d.is_dir())
            || self
                .config_path(places, Scope::User)
                .is_some_and(|p| p.is_file())
    }

    /// Switchboard's entry in this agent's file: the gateway at `url` with `token`, or for
    /// Claude Desktop (stdio only) `bridge` (`switchboard connect`) relaying to it.
    pub(crate) fn entry(self, url: &str, token: &str, bridge: &Bridge) -> Value {
        let bearer = format!("Bearer {token}");
        match self {
            Self::ClaudeCode | Self::VsCode => {
                json!({"type": "http", "url": url, "headers": {"Authorization": bearer}})
            }
            Self::ClaudeDesktop => {
                let mut entry = json!({
                    "command": bridge.program,
                    "args": ["connect", "--url", url],
                });
                if !bridge.token_in_keychain {
                    entry["env"] = json!({"SWITCHBOARD_TOKEN": token});
                }
                entry
            }
            Self::Cursor | Self::Zed => json!({"url": url, "headers": {"Authorization": bearer}}),
            Self::Windsurf => json!({"serverUrl": url, "headers": {"Authorization": bearer}}),
            Self::GeminiCli => json!({"httpUrl": url, "headers": {"Authorization": bearer}}),
            Self::Codex => json!({"url": url, "http_headers": {"Authorization": bearer}}),
        }
    }

    /// The gateway URL and token an entry of ours names (`None`: not a Switchboard entry).
    pub(crate) fn read_entry(self, entry: &Value) -> Option<(String, Option<String>)> {
        if self == Self::ClaudeDesktop {
            let args: Vec<&str> = entry["args"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let at = args.iter().position(|a| *a == "--url")?;
            if args.first() != Some(&"connect") {
                return None;
            }
            let token = entry["env"]["SWITCHBOARD_TOKEN"]
                .as_str()
                .map(str::to_owned);
            return Some(((*args.get(at + 1)?).to_owned(), token));
        }
        let url = ["url", "serverUrl", "httpUrl"]
            .iter()
            .find_map(|k| entry[*k].as_str())?;
        let headers = if self == Self::Codex {
            &entry["http_headers"]
        } else {
            &entry["headers"]
        };
        let token = headers["Authorization"]
            .as_str()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_owned);
        Some((url.to_owned(), token))
    }

    /// The longest tool name Switchboard should hand this agent when its entry is called
    /// `entry`: the agent's own cap (64, what model APIs accept) less the prefix it adds.
    pub fn name_budget(self, entry: &str) -> usize {
        let prefix = match self {
            // `mcp__<entry>__<tool>`
            Self::ClaudeCode | Self::ClaudeDesktop | Self::Codex => 5 + entry.len() + 2,
            // `mcp_<entry>_<tool>`
            Self::GeminiCli | Self::VsCode => 4 + entry.len() + 1,
            // Cursor counts the server name and the tool together
            Self::Cursor => entry.len() + 1,
            Self::Windsurf | Self::Zed => 0,
        };
        crate::mcp::names::MAX_LEN
            .saturating_sub(prefix)
            .max(MIN_BUDGET)
    }

    /// One of this agent's own server entries as a Switchboard server named `name` (adopt).
    pub(crate) fn read_server(self, name: &str, entry: &Value) -> Result<ServerConfig, String> {
        let Some(obj) = entry.as_object() else {
            return Err("not an object".into());
        };
        let strings = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let disabled = obj.get("disabled").and_then(Value::as_bool) == Some(true)
            || obj.get("enabled").and_then(Value::as_bool) == Some(false);
        // Zed's older shape: "command": {"path", "args", "env"}
        let (command, args, env) = match obj.get("command") {
            Some(Value::Object(c)) => (
                c.get("path").and_then(Value::as_str).map(str::to_owned),
                c.get("args").cloned().unwrap_or(Value::Null),
                c.get("env").cloned().unwrap_or(Value::Null),
            ),
            Some(Value::String(c)) => (
                Some(c.clone()),
                obj.get("args").cloned().unwrap_or(Value::Null),
                obj.get("env").cloned().unwrap_or(Value::Null),
            ),
            _ => (None, Value::Null, Value::Null),
        };
        if let Some(command) = command {
            let args = args
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            return Ok(ServerConfig {
                name: name.to_owned(),
                command,
                args,
                env: strings(&env),
                cwd: obj.get("cwd").and_then(Value::as_str).map(PathBuf::from),
                enabled: !disabled,
                ..ServerConfig::default()
            });
        }
        let url = ["url", "serverUrl", "httpUrl"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str));
        let Some(url) = url else {
            return Err("neither a command nor a URL".into());
        };
        if obj.get("type").and_then(Value::as_str) == Some("sse")
            || (self == Self::GeminiCli && obj.contains_key("url"))
        {
            return Err(format!(
                "{url} speaks the old SSE transport, which Switchboard does not"
            ));
        }
        let headers = strings(
            &obj.get(if self == Self::Codex {
                "http_headers"
            } else {
                "headers"
            })
            .cloned()
            .unwrap_or(Value::Null),
        );
        let mut headers: BTreeMap<String, HeaderValue> = headers
            .into_iter()
            .map(|(k, v)| (k, HeaderValue::Plain(v)))
            .collect();
        if self == Self::Codex
            && let Some(var) = obj.get("bearer_token_env_var").and_then(Value::as_str)
        {
            headers.insert(
                "Authorization".into(),
                HeaderValue::Env {
                    var: var.to_owned(),
                    prefix: "Bearer ".into(),
                },
            );
        }
        Ok(ServerConfig {
            name: name.to_owned(),
            url: Some(url.to_owned()),
            headers,
            enabled: !disabled,
            ..ServerConfig::default()
        })
    }
}

/// The smallest budget handed out: room for a readable cut and the hash, and for the
/// gateway's own tools (`switchboard__telemetry_snapshot`, 31), which are never cut.
pub(crate) const MIN_BUDGET: usize = 32;

/// How Claude Desktop (stdio only) reaches the gateway: this program's `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bridge {
    /// The `switchboard` executable, by absolute path (the agent starts it without a shell).
    pub(crate) program: String,
    /// Whether the token went to the OS keychain (else it is passed in the entry's `env`).
    pub(crate) token_in_keychain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_match_serde() {
        for c in Client::ALL {
            assert_eq!(Client::from_id(c.id()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.id()));
        }
    }

    #[test]
    fn budgets_leave_room_for_the_prefix() {
        assert_eq!(Client::ClaudeCode.name_budget("switchboard"), 64 - 18);
        assert_eq!(Client::Zed.name_budget("switchboard"), 64);
        assert_eq!(Client::ClaudeCode.name_budget(&"x".repeat(60)), MIN_BUDGET);
    }

    #[test]
    fn our_entries_read_back() {
        let bridge = Bridge {
            program: "/usr/bin/switchboard".into(),
            token_in_keychain: false,
        };
        for c in Client::ALL {
            let e = c.entry("http://127.0.0.1:9/mcp", "sb_t", &bridge);
            assert_eq!(
                c.read_entry(&e),
                Some(("http://127.0.0.1:9/mcp".into(), Some("sb_t".into()))),
                "{c:?}"
            );
        }
    }
}
