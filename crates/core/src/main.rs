//! `switchboard`: the headless gateway and its command-line tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard_core::Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "The local hub for MCP servers and clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (registration server, API) until interrupted.
    Serve {
        /// Loopback address to listen on [default: 127.0.0.1:11391]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Config file [default: config.toml in the platform config dir]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where state is kept [default: the platform data dir]
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Issue a one-time pairing code (valid 2 minutes) from the running gateway.
    Pair {
        /// Role the paired client gets [default: the configured default role]
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// Revoke a paired client's token and close its sessions.
    Unpair {
        name: String,
        #[command(flatten)]
        place: Place,
    },
    /// Log in to a remote server with OAuth: prints the authorization URL, opens the browser,
    /// and waits for the login to come back and the server to run.
    Login {
        server: String,
        /// How long to wait for the browser, in seconds
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Only print the URL; do not open a browser
        #[arg(long)]
        no_browser: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Forget a remote server's OAuth login (tokens revoked where offered, deleted from the
    /// keychain); the server then needs a login again.
    Logout {
        server: String,
        #[command(flatten)]
        place: Place,
    },
    /// List paired clients.
    Clients {
        #[command(flatten)]
        place: Place,
    },
    /// Be a stdio MCP server that relays to the gateway (for clients that only start stdio
    /// servers). Its token comes from the OS keychain, or SWITCHBOARD_TOKEN.
    Connect {
        /// Pair this bridge first (needs the running gateway) and keep its token in the keychain
        #[arg(long)]
        pair: bool,
        /// Client name when pairing
        #[arg(long, default_value = "switchboard-connect")]
        name: String,
        /// Role when pairing
        #[arg(long)]
        role: Option<String>,
        /// Gateway MCP URL [default: from mcp.json in the data dir, else
        /// http://<listen from the config>/mcp]
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        place: Place,
    },
    /// Connect an agent in one step: pair a token for it and write Switchboard's entry into
    /// its own config (claude-code, claude-desktop, cursor, vscode, windsurf, gemini-cli,
    /// codex, zed). Needs the running gateway.
    Setup {
        /// The agent
        client: String,
        /// Role of its token [default: the configured default role]
        #[arg(long)]
        role: Option<String>,
        /// The entry's name in the agent's config
        #[arg(long, default_value = switchboard_core::setup::DEFAULT_ENTRY)]
        name: String,
        /// The agent's user config, or the project's (in the current directory)
        #[arg(long, value_enum, default_value = "user")]
        scope: ScopeArg,
        /// Take the entry out again and revoke its token
        #[arg(long)]
        remove: bool,
        /// Longest tool name to hand the agent [default: 64 less the prefix it adds, e.g.
        /// 46 for Claude Code's mcp__switchboard__]
        #[arg(long)]
        name_budget: Option<usize>,
        /// Edit the file even where the agent has a CLI of its own (`claude mcp add-json`)
        #[arg(long)]
        no_cli: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Move an agent's own MCP servers into Switchboard (secrets into the OS keychain) and
    /// leave it one entry, Switchboard's; --undo puts its file back exactly.
    Adopt {
        /// The agent
        client: String,
        /// Put the agent's file back as it was, take its servers out of Switchboard, revoke
        #[arg(long)]
        undo: bool,
        /// The agent's user config, or the project's (in the current directory)
        #[arg(long, value_enum, default_value = "user")]
        scope: ScopeArg,
        /// The entry's name in the agent's config
        #[arg(long, default_value = switchboard_core::setup::DEFAULT_ENTRY)]
        name: String,
        #[command(flatten)]
        place: Place,
    },
    /// List the agents on this machine and whether each is connected to the running gateway.
    Agents {
        #[command(flatten)]
        place: Place,
    },
    /// Add the MCP servers of a Claude Desktop or Cursor config to Switchboard's config.
    Import {
        /// claude_desktop_config.json or mcp.json [default: every one found on this machine]
        files: Vec<PathBuf>,
        /// Switchboard's config file to add them to [default: the platform config file]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    User,
    Project,
}

/// Which running gateway to talk to: the one using this data dir.
#[derive(Debug, clap::Args)]
struct Place {
    /// Config file [default: the platform config file]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data dir of the running gateway [default: from the config, else the platform's]
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Place {
    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        Ok(Config::load(self.config.as_deref())?.resolved_data_dir()?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    switchboard_core::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve {
            listen,
            config,
            data_dir,
        } => runtime.block_on(run_serve(listen, config, data_dir)),
        Command::Import { files, config } => run_import(files, config),
        Command::Pair { role, place } => runtime.block_on(run_control(
            &place,
            serde_json::json!({"op": "pair", "role": role}),
        )),
        Command::Unpair { name, place } => runtime.block_on(run_control(
            &place,
            serde_json::json!({"op": "unpair", "name": name}),
        )),
        Command::Connect {
            pair,
            name,
            role,
            url,
            place,
        } => runtime.block_on(run_connect(pair, name, role, url, place)),
        Command::Login {
            server,
            timeout,
            no_browser,
            place,
        } => runtime.block_on(run_login(server, timeout, no_browser, place)),
        Command::Logout { server, place } => runtime.block_on(run_control(
            &place,
            serde_json::json!({"op": "logout", "server": server}),
        )),
        Command::Setup {
            client,
            role,
            name,
            scope: scope_arg,
            remove,
            name_budget,
            no_cli,
            place,
        } => {
            let opts = switchboard_core::setup::Options {
                scope: scope(scope_arg),
                entry: name,
                role,
                name_budget,
                use_cli: !no_cli,
                ..Default::default()
            };
            runtime.block_on(run_setup(&client, opts, remove, &place))
        }
        Command::Agents { place } => runtime.block_on(run_agents(&place)),
        Command::Adopt {
            client,
            undo,
            scope,
            name,
            place,
        } => runtime.block_on(run_adopt(&client, undo, scope, name, &place)),
        Command::Clients { place } => {
            runtime.block_on(run_control(&place, serde_json::json!({"op": "clients"})))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_serve(
    listen: Option<SocketAddr>,
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut config = Config::load(config_file.as_deref())?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(dir) = data_dir {
        config.data_dir = Some(dir);
    }
    // Every registration socket is a file descriptor; the default soft limit (often 1024) would
    // cap the registration server long before its own limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "{} is already in use: is Switchboard already running? (choose another address \
                 with --listen)",
                config.listen
            ),
            _ => anyhow::anyhow!("cannot listen on {}: {e}", config.listen),
        })?;
    let local = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    // Headless, a machine without a keychain (a server, a container) is common: the default
    // store may fall back to a 0600 file there, with a warning (the desktop app insists).
    let stores = switchboard_core::auth::store::Stores {
        file_fallback: true,
        ..Default::default()
    };
    let gateway = switchboard_core::Gateway::open_with(&config, local, stores, shutdown).await?;
    // The one line on stdout, once the gateway is open: scripts read the address from it.
    println!("Switchboard listening on http://{local}");
    gateway.run(listener).await?;
    Ok(())
}

#[cfg(unix)]
async fn run_control(place: &Place, req: serde_json::Value) -> anyhow::Result<()> {
    let op = req["op"].as_str().unwrap_or_default().to_owned();
    let reply = switchboard_core::pairing::control(&place.data_dir()?, req)
        .await
        .map_err(anyhow::Error::msg)?;
    if reply["ok"] != true {
        anyhow::bail!("{}", reply["error"].as_str().unwrap_or("failed"));
    }
    match op.as_str() {
        "pair" => {
            println!(
                "Pairing code, valid {} s. In the client: POST {} with header X-Pairing-Code (or {{\"code\", \"name\"}}).",
                reply["expires_in_s"],
                reply["pair_url"].as_str().unwrap_or("/pair")
            );
            // the code alone on the last line, for scripts
            println!("{}", reply["code"].as_str().unwrap_or_default());
        }
        "unpair" => println!(
            "unpaired {}",
            reply["unpaired"].as_str().unwrap_or_default()
        ),
        "logout" => println!(
            "{} {}",
            if reply["logged_out"] == true {
                "logged out of"
            } else {
                "no login was stored for"
            },
            reply["server"].as_str().unwrap_or_default()
        ),
        _ => {
            for c in reply["clients"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{}\t{}",
                    c["name"].as_str().unwrap_or_default(),
                    c["role"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// `switchboard login`: the URL from the gateway, the browser, then one bounded wait for the
/// login to end and the server to run.
#[cfg(unix)]
async fn run_login(
    server: String,
    timeout: u64,
    no_browser: bool,
    place: Place,
) -> anyhow::Result<()> {
    use std::time::Duration;
    let data_dir = place.data_dir()?;
    let timeout = timeout.clamp(1, 1800);
    let reply = switchboard_core::pairing::control(
        &data_dir,
        serde_json::json!({"op": "login", "server": server, "timeout_s": timeout}),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    if reply["ok"] != true {
        anyhow::bail!("{}", reply["error"].as_str().unwrap_or("login failed"));
    }
    let url = reply["authorization_url"].as_str().unwrap_or_default();
    println!("Log in to {server} in your browser; if it does not open, open this URL:");
    println!("{url}");
    if !no_browser && let Err(e) = switchboard_core::browser::open(url) {
        eprintln!("{e}");
    }
    // The gateway bounds the wait itself; a little longer here so that its reason arrives.
    let reply = switchboard_core::pairing::control_within(
        &data_dir,
        serde_json::json!({"op": "login_wait", "server": server, "timeout_s": timeout}),
        Duration::from_secs(timeout + 15),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    if reply["ok"] != true {
        anyhow::bail!("{}", reply["error"].as_str().unwrap_or("login failed"));
    }
    println!("logged in to {server}; it is running");
    Ok(())
}

#[cfg(not(unix))]
async fn run_login(_: String, _: u64, _: bool, _place: Place) -> anyhow::Result<()> {
    anyhow::bail!("the control socket is not available on this platform yet; log in from the tray")
}

#[cfg(not(unix))]
async fn run_control(_place: &Place, _req: serde_json::Value) -> anyhow::Result<()> {
    anyhow::bail!("the control socket is not available on this platform yet; pair from the tray")
}

async fn run_connect(
    pair: bool,
    name: String,
    role: Option<String>,
    url: Option<String>,
    place: Place,
) -> anyhow::Result<()> {
    // The running gateway's own announcement first (it may listen elsewhere than the config
    // says), then the configured address.
    let announced = || {
        place
            .data_dir()
            .ok()
            .and_then(|d| switchboard_core::discovery::Discovery::read(&d))
            .map(|d| d.url)
    };
    let url = match url.or_else(announced) {
        Some(u) => u,
        None => format!(
            "http://{}/mcp",
            Config::load(place.config.as_deref())?.listen
        ),
    };
    if pair {
        let reply = switchboard_core::pairing::control(
            &place.data_dir()?,
            serde_json::json!({"op": "pair", "role": role}),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let code = reply["code"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{}", reply["error"].as_str().unwrap_or("no code")))?;
        let answer: serde_json::Value = reqwest::Client::new()
            .post(url.replace("/mcp", "/pair"))
            .json(&serde_json::json!({"code": code, "name": name}))
            .send()
            .await?
            .json()
            .await?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("pairing refused: {answer}"))?;
        switchboard_core::connect::store_token(&url, token)
            .await
            .map_err(anyhow::Error::msg)?;
        eprintln!(
            "paired as {} ({}); token kept in the OS keychain",
            answer["name"], answer["role"]
        );
        return Ok(());
    }
    let token = switchboard_core::connect::token(&url)
        .await
        .map_err(anyhow::Error::msg)?;
    switchboard_core::connect::relay(url, token).await
}

fn places() -> anyhow::Result<switchboard_core::setup::Places> {
    switchboard_core::setup::Places::of_this_user()
        .ok_or_else(|| anyhow::anyhow!("no home directory or current directory"))
}

fn agent(id: &str) -> anyhow::Result<switchboard_core::setup::Client> {
    use switchboard_core::setup::Client;
    Client::from_id(id).ok_or_else(|| {
        let known: Vec<&str> = Client::ALL.iter().map(|c| c.id()).collect();
        anyhow::anyhow!("unknown agent {id:?}; one of: {}", known.join(", "))
    })
}

fn scope(arg: ScopeArg) -> switchboard_core::setup::Scope {
    match arg {
        ScopeArg::User => switchboard_core::setup::Scope::User,
        ScopeArg::Project => switchboard_core::setup::Scope::Project,
    }
}

async fn run_adopt(
    client: &str,
    undo: bool,
    scope_arg: ScopeArg,
    name: String,
    place: &Place,
) -> anyhow::Result<()> {
    use switchboard_core::setup::{self, Pairer, adopt};
    let client = agent(client)?;
    let data_dir = place.data_dir()?;
    let config = match place
        .config
        .clone()
        .or_else(switchboard_core::config::default_config_file)
    {
        Some(c) => c,
        None => anyhow::bail!("no home directory: pass --config FILE"),
    };
    let target = adopt::Target {
        config,
        secrets: std::sync::Arc::new(switchboard_core::auth::keychain::KeychainSecrets),
        state_dir: data_dir.clone(),
    };
    let pairer = Pairer::Control { data_dir };
    let opts = setup::Options {
        scope: scope(scope_arg),
        entry: name,
        ..Default::default()
    };
    if undo {
        let done = adopt::undo(client, &opts, &pairer, &target).await?;
        for line in done.lines(&target.config) {
            println!("{line}");
        }
        return Ok(());
    }
    let done = adopt::adopt(&places()?, client, &opts, &pairer, &target).await?;
    for line in done.lines(&opts.entry, &target.config) {
        println!("{line}");
    }
    Ok(())
}

async fn run_setup(
    client: &str,
    opts: switchboard_core::setup::Options,
    remove: bool,
    place: &Place,
) -> anyhow::Result<()> {
    use switchboard_core::setup::{self, Pairer};
    let client = agent(client)?;
    let pairer = Pairer::Control {
        data_dir: place.data_dir()?,
    };
    let places = places()?;
    let report = if remove {
        setup::disconnect(&places, client, &opts, &pairer).await?
    } else {
        setup::connect(&places, client, &opts, &pairer).await?
    };
    for line in report.lines(&opts.entry) {
        println!("{line}");
    }
    Ok(())
}

async fn run_agents(place: &Place) -> anyhow::Result<()> {
    use switchboard_core::setup::{self, Pairer};
    let pairer = Pairer::Control {
        data_dir: place.data_dir()?,
    };
    let url = pairer.url()?;
    for d in setup::detect(&places()?, &pairer, &url).await {
        let state = match (d.installed, d.connected) {
            (_, true) => "connected",
            (true, false) => "installed",
            (false, false) => "not found",
        };
        println!(
            "{}\t{state}\t{}",
            d.client.id(),
            d.path.map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    Ok(())
}

fn run_import(files: Vec<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match config.or_else(switchboard_core::config::default_config_file) {
        Some(c) => c,
        None => anyhow::bail!("no home directory: pass --config FILE"),
    };
    let files = if files.is_empty() {
        let found = switchboard_core::import::known_client_configs();
        if found.is_empty() {
            anyhow::bail!(
                "no Claude Desktop or Cursor config found; name the file: switchboard import FILE"
            );
        }
        found
    } else {
        files
    };
    let outcome = switchboard_core::import::import_into(&config, &files)?;
    for name in &outcome.added {
        println!("added {name}");
    }
    for (name, why) in &outcome.skipped {
        println!("skipped {name}: {why}");
    }
    println!(
        "{} server(s) added to {} (a running Switchboard applies them within a second)",
        outcome.added.len(),
        config.display()
    );
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}
