//! `river host` and its maintenance subcommands.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(subcommand)]
    pub action: Option<HostCmd>,
    /// Config file (TOML); `river init config --host` writes one with every default.
    #[arg(short, long, env = "RIVER_HOST_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// State directory (CA, keys, database). Overrides the config file.
    #[arg(long, env = "RIVER_HOST_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Address for the mesh (UDP) and HTTPS API (TCP). Overrides the config file.
    #[arg(long, env = "RIVER_HOST_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Name or IP runners and users reach the host at (repeatable). Overrides the config file.
    #[arg(long)]
    pub advertise: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Write a consistent backup of the host's state while it runs: the database, the CA and
    /// the host's keys, in one tar file (mode 0600: it holds the CA's private key).
    #[command(
        after_help = "Environment archives (STATE_DIR/blobs) are not included; copy them separately if you need them.\n\nExample:\n  river host backup /backups/river-$(date +%F).tar"
    )]
    Backup {
        /// Where to write it; an existing file is replaced only once the new backup is complete.
        file: PathBuf,
    },
    /// Put a backup into the state directory of a stopped host. Checks it first; then sets aside
    /// what the directory held (with --force) in STATE_DIR/replaced-TIME/.
    #[command(
        after_help = "After a restore, task ids start above any handed out before, nodes that joined after the\nbackup wait for `river node admit NAME`, and nodes removed after it must be removed again.\n\nExample:\n  river host restore /backups/river-2026-12-01.tar --state-dir /var/lib/river/host --force"
    )]
    Restore {
        /// A file written by `river host backup`.
        file: PathBuf,
        /// Restore over a state directory that already holds a cluster, setting it aside.
        #[arg(long)]
        force: bool,
    },
}
