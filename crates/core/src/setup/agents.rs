//! The agents of a running gateway: what the dashboard's Clients view lists
//! (`GET /api/agents`) and what its Connect, Disconnect, Adopt and Undo buttons do, and the
//! desktop tray's Pair ▸ Connect/Disconnect items. One implementation for both, over
//! [`setup`](super) and [`adopt`], pairing in-process (the gateway is the pairer) and keeping
//! adopted secrets in the gateway's own secret store.
//!
//! Every action that ran is announced on the bus ([`HubEvent::AgentChanged`]), so that other
//! open dashboards and the tray show the agent's new state without asking.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Client, Detected, Options, Pairer, Places, Scope, SetupError, adopt};
use crate::auth::store::SecretStore;
use crate::events::{EventBus, HubEvent};
use crate::pairing::Pairing;

/// What can be done to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Disconnect,
    Adopt,
    Undo,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connect" => Some(Self::Connect),
            "disconnect" => Some(Self::Disconnect),
            "adopt" => Some(Self::Adopt),
            "undo" => Some(Self::Undo),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Disconnect => "disconnect",
            Self::Adopt => "adopt",
            Self::Undo => "undo",
        }
    }
}

/// An action that could not happen. Nothing was changed, and no token was left paired.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no agent {0:?}")]
    Unknown(String),
    #[error("unknown action {0:?}; use connect, disconnect, adopt or undo")]
    Action(String),
    #[error("no home directory to find agents in")]
    NoHome,
    #[error(
        "this gateway runs without a config file, so it cannot adopt servers; start it with \
         --config <file>"
    )]
    NoConfigFile,
    #[error(
        "Claude Desktop starts `switchboard connect`, and there is no `switchboard` program \
         beside this one or on PATH (the desktop app's own program cannot bridge); install \
         Switchboard's command-line program, then connect again"
    )]
    NoBridge,
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// The `switchboard` program that Claude Desktop's entry starts (`switchboard connect`):
/// `exe` itself when it is that program (`switchboard serve`), else one beside it, else one
/// on `path`. The desktop app is `switchboard-app`: its `connect` would only open its window.
fn bridge_program(exe: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let cli = format!("switchboard{}", std::env::consts::EXE_SUFFIX);
    if let Some(exe) = exe
        && exe.file_name() == Some(OsStr::new(&cli))
    {
        return Some(exe.to_path_buf());
    }
    exe.and_then(Path::parent)
        .map(|dir| dir.join(&cli))
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(path?)
                .map(|d| d.join(&cli))
                .find(|p| p.is_file())
        })
}

/// How an action is done (the API's optional body): which config file, the entry's name,
/// the paired client's role.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    #[serde(default)]
    pub scope: Scope,
    pub name: Option<String>,
    pub role: Option<String>,
}

/// One agent as the dashboard and the tray show it.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    #[serde(flatten)]
    pub detected: Detected,
    /// Its servers were adopted, and Undo would put them back.
    pub adopted: bool,
}

/// Every agent, and the endpoint their entries name.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub url: String,
    pub agents: Vec<Agent>,
}

/// The running gateway's agents: a cheap handle (the dashboard's handlers make one per
/// request; the desktop shell keeps one).
#[derive(Debug, Clone)]
pub struct Agents {
    /// Where agents' configs are looked for; `None`: this user's home and config dir.
    home: Option<PathBuf>,
    pairing: Pairing,
    /// Switchboard's config file, where adopted servers go; `None` without one.
    config: Option<PathBuf>,
    data_dir: PathBuf,
    secrets: Arc<dyn SecretStore>,
    /// The gateway's one-config-edit-at-a-time lock (adopt and undo edit the config file
    /// that the dashboard's server actions edit too).
    config_edit: Arc<tokio::sync::Mutex<()>>,
    bus: EventBus,
}

impl Agents {
    pub(crate) fn new(
        home: Option<PathBuf>,
        pairing: Pairing,
        config: Option<PathBuf>,
        data_dir: PathBuf,
        secrets: Arc<dyn SecretStore>,
        config_edit: Arc<tokio::sync::Mutex<()>>,
        bus: EventBus,
    ) -> Self {
        Self {
            home,
            pairing,
            config,
            data_dir,
            secrets,
            config_edit,
            bus,
        }
    }

    fn places(&self) -> Result<Places, AgentError> {
        match &self.home {
            Some(home) => Ok(Places::under(home)),
            None => Places::of_this_user().ok_or(AgentError::NoHome),
        }
    }

    fn pairer(&self) -> Pairer {
        Pairer::Local(self.pairing.clone())
    }

    /// Every agent Switchboard can connect, installed or not, connected or not, adopted or
    /// not.
    pub async fn list(&self) -> Result<Listing, AgentError> {
        let pairer = self.pairer();
        let url = pairer.url()?;
        let adopted = adopt::adopted(&self.data_dir)?;
        let agents = super::detect(&self.places()?, &pairer, &url)
            .await
            .into_iter()
            .map(|detected| Agent {
                adopted: adopted.contains(detected.client.id()),
                detected,
            })
            .collect();
        Ok(Listing { url, agents })
    }

    /// Runs `action` on `client` and says what it changed: `{report, lines}` for connect and
    /// disconnect, `{adopted, lines}` and `{undone, lines}` for adopt and undo (`lines`: the
    /// same in words, as the CLI prints them).
    pub async fn act(
        &self,
        client: Client,
        action: Action,
        req: ActionRequest,
    ) -> Result<Value, AgentError> {
        let places = self.places()?;
        let pairer = self.pairer();
        let mut opts = Options {
            scope: req.scope,
            role: req.role,
            ..Options::default()
        };
        if let Some(name) = req.name {
            opts.entry = name;
        }
        if client == Client::ClaudeDesktop && matches!(action, Action::Connect | Action::Adopt) {
            let exe = std::env::current_exe().ok();
            let path = std::env::var_os("PATH");
            opts.program =
                bridge_program(exe.as_deref(), path.as_deref()).ok_or(AgentError::NoBridge)?;
        }
        let target = || -> Result<adopt::Target, AgentError> {
            Ok(adopt::Target {
                config: self.config.clone().ok_or(AgentError::NoConfigFile)?,
                secrets: self.secrets.clone(),
                state_dir: self.data_dir.clone(),
            })
        };
        let value = match action {
            Action::Connect => {
                let r = super::connect(&places, client, &opts, &pairer).await?;
                json!({"report": r, "lines": r.lines(&opts.entry)})
            }
            Action::Disconnect => {
                let r = super::disconnect(&places, client, &opts, &pairer).await?;
                json!({"report": r, "lines": r.lines(&opts.entry)})
            }
            Action::Adopt => {
                let target = target()?;
                let _one_at_a_time = self.config_edit.lock().await;
                let a = adopt::adopt(&places, client, &opts, &pairer, &target).await?;
                json!({"lines": a.lines(&opts.entry, &target.config), "adopted": a})
            }
            Action::Undo => {
                let target = target()?;
                let _one_at_a_time = self.config_edit.lock().await;
                let u = adopt::undo(client, &opts, &pairer, &target).await?;
                json!({"lines": u.lines(&target.config), "undone": u})
            }
        };
        self.bus.publish(HubEvent::AgentChanged {
            agent: client.id().to_owned(),
            action: action.as_str(),
        });
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_desktops_bridge_is_the_switchboard_program_never_the_apps() {
        let dir = tempfile::tempdir().unwrap();
        let cli = dir
            .path()
            .join(format!("switchboard{}", std::env::consts::EXE_SUFFIX));
        let app = dir.path().join("switchboard-app");
        // the headless gateway is the program itself
        assert_eq!(bridge_program(Some(&cli), None), Some(cli.clone()));
        // the app: nothing beside it, nothing on PATH
        assert_eq!(bridge_program(Some(&app), None), None);
        let elsewhere = tempfile::tempdir().unwrap();
        let on_path = elsewhere
            .path()
            .join(format!("switchboard{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&on_path, "").unwrap();
        let path = std::env::join_paths([elsewhere.path()]).unwrap();
        assert_eq!(bridge_program(Some(&app), Some(&path)), Some(on_path));
        // the one beside the app comes first
        std::fs::write(&cli, "").unwrap();
        assert_eq!(bridge_program(Some(&app), Some(&path)), Some(cli));
    }
}
