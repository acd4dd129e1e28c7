//! Opening a URL in the person's browser, as `xdg-open` would: on Linux and the BSDs
//! `$BROWSER` first (a `:`-separated list of commands, `%s` standing for the URL, else the URL
//! appended), then `xdg-open`; `open` on macOS; `start` on Windows. Used for OAuth logins (the
//! CLI, the tray). A leaf: it imports nothing of the crate.

use std::process::{Command, Stdio};

/// Starts the browser on `url` and returns at once (the browser is not waited for; its exit
/// is reaped on a thread so that no zombie stays). The error says what was tried.
pub fn open(url: &str) -> Result<(), String> {
    let mut tried = Vec::new();
    for mut command in candidates(url) {
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match command.spawn() {
            Ok(mut child) => {
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(());
            }
            Err(e) => tried.push(format!("{program}: {e}")),
        }
    }
    Err(format!(
        "cannot open a browser ({}); open the URL yourself",
        if tried.is_empty() {
            "nothing to try".to_owned()
        } else {
            tried.join("; ")
        }
    ))
}

/// The commands to try, in order.
fn candidates(url: &str) -> Vec<Command> {
    let mut out = Vec::new();
    if cfg!(target_os = "macos") {
        let mut c = Command::new("open");
        c.arg(url);
        out.push(c);
    } else if cfg!(target_os = "windows") {
        let mut c = Command::new("cmd");
        c.args(["/C", "start", "", url]);
        out.push(c);
    } else {
        if let Ok(list) = std::env::var("BROWSER") {
            out.extend(browser_commands(&list, url));
        }
        let mut c = Command::new("xdg-open");
        c.arg(url);
        out.push(c);
    }
    out
}

/// `$BROWSER`'s commands for `url`: each entry split on spaces, `%s` replaced by the URL (or
/// the URL added as the last argument), `%%` a literal `%`.
fn browser_commands(list: &str, url: &str) -> Vec<Command> {
    list.split(':')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let mut words = entry.split_whitespace();
            let program = words.next()?;
            let mut args: Vec<String> = words.map(str::to_owned).collect();
            let mut placed = false;
            for a in &mut args {
                if a.contains("%s") {
                    *a = a.replace("%s", url);
                    placed = true;
                }
                *a = a.replace("%%", "%");
            }
            if !placed {
                args.push(url.to_owned());
            }
            let mut c = Command::new(program);
            c.args(args);
            Some(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::browser_commands;

    fn shown(list: &str) -> Vec<Vec<String>> {
        browser_commands(list, "http://x/?a=1")
            .iter()
            .map(|c| {
                std::iter::once(c.get_program())
                    .chain(c.get_args())
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn browser_entries_take_the_url_at_percent_s_or_last() {
        assert_eq!(
            shown("firefox:/usr/bin/w3m -o x=%s:"),
            vec![
                vec!["firefox".to_owned(), "http://x/?a=1".to_owned()],
                vec![
                    "/usr/bin/w3m".to_owned(),
                    "-o".to_owned(),
                    "x=http://x/?a=1".to_owned()
                ],
            ]
        );
        assert!(shown("").is_empty());
    }
}
