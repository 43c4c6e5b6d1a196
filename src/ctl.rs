//! `ferricorn ctl`: talk to a running server's control socket
//! (`--control-socket`). One command, its answer on stdout; exit 0 when it
//! was done, 1 when it failed or the server could not be reached.

use clap::Parser;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "ferricorn ctl",
    about = "Control a running ferricorn through its control socket.",
    after_help = "Commands: status, stats --json, reload, upgrade, scale N, stop [--graceful].\n\
        reload and scale answer once they are done (\"reloaded: 4 new workers ready in 1.2 s\")."
)]
struct CtlCli {
    /// The server's --control-socket (under systemd: $RUNTIME_DIRECTORY/ferricorn.ctl).
    #[arg(
        short = 's',
        long = "socket",
        value_name = "PATH",
        env = "FERRICORN_CONTROL_SOCKET"
    )]
    socket: PathBuf,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Run `ferricorn ctl ARGS…` (`args` without the leading `ctl`); the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let cli = match CtlCli::try_parse_from(
        std::iter::once(std::ffi::OsString::from("ferricorn ctl")).chain(args),
    ) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let line = cli.command.join(" ");
    let mut stream = match UnixStream::connect(&cli.socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "ferricorn ctl: cannot reach {}: {e} (is the server running with --control-socket, and are you its user?)",
                cli.socket.display()
            );
            return 1;
        }
    };
    // reload and scale wait for their outcome; the server bounds that wait.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(330)));
    if let Err(e) = stream.write_all(format!("{line}\n").as_bytes()) {
        eprintln!("ferricorn ctl: sending {line:?}: {e}");
        return 1;
    }
    let mut answer = String::new();
    if let Err(e) = stream.read_to_string(&mut answer) {
        eprintln!("ferricorn ctl: waiting for the answer: {e}");
        return 1;
    }
    let answer = answer.trim_end();
    if answer.is_empty() {
        eprintln!(
            "ferricorn ctl: the connection closed without an answer (the server stopped or re-executed itself)"
        );
        return 1;
    }
    println!("{answer}");
    let failed = answer.starts_with("error:")
        || answer.starts_with("reload failed")
        || answer.starts_with("reload refused")
        || answer.starts_with("still in progress");
    i32::from(failed)
}
