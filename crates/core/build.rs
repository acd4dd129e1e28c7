//! Builds the dashboard (`ui/`, Vite + Svelte) into `ui/dist` when it is missing or older
//! than its sources, so that a fresh clone's `cargo build` embeds a real page. Needs Node.js
//! and npm (`npm ci` installs the locked packages the first time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The newest modification time under `path` (files and directories, recursively).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let mut t = meta.modified().ok()?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            if let Some(child) = newest(&entry.path()) {
                t = t.max(child);
            }
        }
    }
    Some(t)
}

fn npm(ui: &Path, args: &[&str]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(ui)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `npm {}` in {} to build the dashboard ({e}); install Node.js 20+ \
                 and npm",
                args.join(" "),
                ui.display()
            )
        });
    assert!(
        status.success(),
        "`npm {}` failed in {} ({status})",
        args.join(" "),
        ui.display()
    );
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let ui = manifest.join("../../ui");
    let sources = [
        "src",
        "index.html",
        "public",
        "vite.config.ts",
        "package.json",
        "package-lock.json",
        "tsconfig.json",
    ];
    for s in sources {
        println!("cargo:rerun-if-changed={}", ui.join(s).display());
    }
    println!("cargo:rerun-if-changed={}", ui.join("dist").display());
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_SKIP_UI_BUILD");
    let dist = ui.join("dist");
    let built = newest(&dist.join("index.html"));
    let changed = sources.iter().filter_map(|s| newest(&ui.join(s))).max();
    let stale = match (built, changed) {
        (None, _) => true,
        (Some(b), Some(c)) => c > b,
        (Some(_), None) => false,
    };
    if !stale {
        return;
    }
    if std::env::var_os("SWITCHBOARD_SKIP_UI_BUILD").is_some() && built.is_some() {
        println!("cargo:warning=ui/dist is older than ui/src; SWITCHBOARD_SKIP_UI_BUILD keeps it");
        return;
    }
    if !ui.join("node_modules").is_dir() {
        npm(&ui, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(&ui, &["run", "build"]);
}
