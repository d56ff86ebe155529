//! `river`: one binary for the host, the runner and every client command. This file only parses
//! arguments and hands over to `cmd/`.

mod args;
mod client;
mod cmd;
mod output;

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    if !args.command.is_server() && !matches!(args.command, args::Command::Forward { .. } | args::Command::Ui(_)) {
        quiet_on_closed_output();
    }
    init_logging(&args);
    // Servers spread their connections over every core. A client command has one connection
    // to the host, whose QUIC driver is a single task anyway: on one thread its relays never wake
    // another (`river forward` measured ~20% more throughput and lower latency this way).
    let mut builder = if args.command.is_server() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `river task list | head -1`: when the reader of our output goes away, end quietly as Unix tools
/// do, rather than panic on the failed write. Not for servers and `forward`, whose sockets must
/// never kill the process.
#[allow(unsafe_code)]
fn quiet_on_closed_output() {
    // SAFETY: restores the default action for SIGPIPE (Rust's runtime sets it to ignored) before
    // any thread exists; nothing else in the process depends on it being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(args: &args::Cli) {
    // Servers log at info by default; client commands stay quiet unless asked.
    let default = if args.command.is_server() { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIVER_LOG").unwrap_or_else(|_| default.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
