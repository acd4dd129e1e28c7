//! `switchboard-relay`: the bench's "relay floor", one extra process that does nothing but
//! forward bytes.
//!
//! `switchboard-relay COMMAND [ARGS…]` spawns COMMAND and copies its own stdin to the child's
//! stdin and the child's stdout to its own stdout, each direction on its own thread with
//! blocking reads and writes, every chunk forwarded as soon as it is read (no parsing, no
//! buffering beyond one read). Put between the gateway bench's client and the fixture server,
//! it measures what any extra process hop costs on the machine: the floor under what a gateway
//! process can add. It exits when its stdin closes (after the child has exited) or when the
//! child's stdout closes.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};

/// Copies `from` to `to` chunk by chunk until `from` ends or `to` fails.
fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: switchboard-relay COMMAND [ARGS…]");
        return ExitCode::from(2);
    };
    let mut child = match Command::new(&program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "switchboard-relay: cannot start {}: {e}",
                program.to_string_lossy()
            );
            return ExitCode::from(1);
        }
    };
    let (Some(child_in), Some(child_out)) = (child.stdin.take(), child.stdout.take()) else {
        eprintln!("switchboard-relay: the child has no pipes");
        return ExitCode::from(1);
    };
    // client → child: ends when our stdin closes, which closes the child's stdin (it exits)
    let up = std::thread::spawn(move || pump(std::io::stdin().lock(), child_in));
    // child → client, here
    pump(child_out, std::io::stdout().lock());
    let _ = child.kill();
    let status = child.wait();
    drop(up); // blocked on our stdin at worst; the process ends anyway
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
