//! `river ui`: the web dashboard, on this machine or at the host's own address.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct UiArgs {
    #[command(subcommand)]
    pub cmd: Option<UiCmd>,
    /// The local port (0 picks a free one).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub port: u16,
    /// Print the link only; do not start a browser.
    #[arg(long)]
    pub no_open: bool,
    /// Print a one-time link to the dashboard the host serves at its own address (its `[web]`
    /// config) instead: it logs one browser in as you, within 10 minutes.
    #[arg(long, conflicts_with_all = ["port", "no_open"])]
    pub link: bool,
}

#[derive(Debug, Subcommand)]
pub enum UiCmd {
    /// The browsers logged in to the dashboard at the host's own address as you (or as USER).
    #[command(after_help = "Example:\n  river ui sessions")]
    Sessions {
        /// Someone else's (operators and admins, for those they manage).
        #[arg(long)]
        user: Option<String>,
    },
    /// Log a browser out of the dashboard at once (what it has open closes), or all of them.
    #[command(after_help = "Examples:\n  river ui revoke 3f2a9c01b7de\n  river ui revoke --all")]
    Revoke {
        /// The session's id (`river ui sessions`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every session.
        #[arg(long)]
        all: bool,
        /// Someone else's (operators and admins, for those they manage).
        #[arg(long)]
        user: Option<String>,
    },
}
