//! Configuration: the TOML file, its defaults, and where Switchboard keeps its files.
//!
//! The file lives in the platform config dir (`directories`), command-line flags override it,
//! and state goes to the platform data dir unless the file or a flag names another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The address Switchboard listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11391";

/// Everything `serve` needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Loopback address and port of the one HTTP/WebSocket server.
    pub listen: SocketAddr,
    /// Where state (the SQLite registry, logs) lives; the platform data dir when unset.
    pub data_dir: Option<PathBuf>,
    pub registration: RegistrationConfig,
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            data_dir: None,
            registration: RegistrationConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// Limits and timers of the registration server (`/ws/mcp`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Registration sockets open at once, over all clients (all share 127.0.0.1, so the cap is
    /// global, never per address). The next one is answered `error` and closed.
    pub max_connections: usize,
    /// Sockets a project keeps; when a new one registers, the oldest beyond this get
    /// `goodbye{reason:"superseded"}`. The real client opens a socket a second and never closes
    /// old ones, so without this the count only grows.
    pub max_sockets_per_project: usize,
    /// How often the server sends `ping`.
    pub ping_interval_ms: u64,
    /// Unanswered pings after which the socket is closed.
    pub max_missed_pongs: u32,
    /// A socket that has not registered by then is closed.
    pub idle_timeout_ms: u64,
    /// Largest text message we parse; a larger one is answered `invalid_message` and the socket
    /// stays usable. Frames beyond 16 times this are refused by the transport (close 1009).
    pub max_message_bytes: usize,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_sockets_per_project: 3,
            ping_interval_ms: 30_000,
            max_missed_pongs: 3,
            idle_timeout_ms: 10_000,
            max_message_bytes: 256 * 1024,
        }
    }
}

impl RegistrationConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }

    /// The transport's hard limit for one WebSocket message.
    pub fn transport_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(16).max(64 * 1024)
    }
}

/// HTTP-level policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Extra `Origin` values to accept besides the loopback and Tauri webview origins.
    pub allowed_origins: Vec<String>,
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no home directory found, so there is no default {0} dir; pass it explicitly")]
    NoHome(&'static str),
}

impl Config {
    /// Reads `path`, or the default config file if there is one, or returns the defaults.
    /// A path given explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_config_file() {
                Some(p) => (p, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text).map_err(|message| ConfigError::Parse { path, message })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The data dir in force: the configured one or the platform's.
    pub fn resolved_data_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => project_dirs()
                .map(|d| d.data_dir().to_path_buf())
                .ok_or(ConfigError::NoHome("data")),
        }
    }
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "Switchboard", "switchboard")
}

/// `config.toml` in the platform config dir.
pub fn default_config_file() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_11391() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:11391");
        assert_eq!(c.registration.ping_interval(), Duration::from_secs(30));
    }

    #[test]
    fn file_overrides_some_fields_and_keeps_the_rest() {
        let c = Config::parse("[registration]\nmax_sockets_per_project = 5\n").unwrap();
        assert_eq!(c.registration.max_sockets_per_project, 5);
        assert_eq!(c.registration.max_missed_pongs, 3);
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_key() {
        let err = Config::parse("[registration]\nmax_socket = 5\n").unwrap_err();
        assert!(err.contains("max_socket"), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error_naming_it() {
        let err = Config::load(Some(Path::new("/nonexistent/sb.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/sb.toml"), "{err}");
    }
}
