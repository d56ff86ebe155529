//! `river host` and its maintenance subcommands, `river runner`, `river up` and `river down`.

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

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("join_token").args(["token", "token_file"]))]
pub struct RunnerArgs {
    /// Config file (TOML); `river init config --runner` writes one with every default.
    #[arg(short, long, env = "RIVER_RUNNER_CONFIG")]
    pub config: Option<PathBuf>,
    /// State directory (node identity). Overrides the config file.
    #[arg(long, env = "RIVER_RUNNER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Host to join, HOST[:PORT] (first start only), with the token from `--token-file`,
    /// `RIVER_JOIN_TOKEN` or `--token`.
    #[arg(long, value_name = "HOST:PORT", requires = "join_token")]
    pub join: Option<String>,
    /// A file holding the join token from `river token create` (first start only): unlike
    /// `--token`, it shows in no process list.
    #[arg(long, value_name = "FILE", requires = "join", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The join token itself (first start only); every user of the machine can read it in `ps`
    /// while the runner joins, so prefer `--token-file` or `RIVER_JOIN_TOKEN`.
    #[arg(long, env = "RIVER_JOIN_TOKEN", hide_env_values = true, requires = "join")]
    pub token: Option<String>,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state (default: ~/.local/share/river).
    #[arg(long, env = "RIVER_UP_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address of the host's mesh and API (default: the host config's, else 127.0.0.1:7443).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// A name or address other machines reach this one at (repeatable): it goes into the host's
    /// certificate and the commands printed for joining (with `--listen 0.0.0.0:7443`).
    #[arg(long, value_name = "NAME")]
    pub advertise: Vec<String>,
    /// A host config file (`river init config --host` writes one): overlay, limits, approvals…
    /// Its state_dir is replaced by STATE_DIR/host.
    #[arg(long, value_name = "FILE")]
    pub host_config: Option<PathBuf>,
    /// A runner config file (`river init config --runner`): shared_dir, allowed_mounts, GPUs…
    /// Its state_dir and name are replaced by STATE_DIR/runner and this machine's name.
    #[arg(long, value_name = "FILE")]
    pub runner_config: Option<PathBuf>,
    /// Run in the background and return once the cluster is ready.
    #[arg(short, long)]
    pub detach: bool,
    /// Image of the `default` environment, made at the first start (for offline machines: one the
    /// local Docker engine already has).
    #[arg(long, env = "RIVER_DEFAULT_IMAGE", value_name = "IMAGE")]
    pub default_image: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The state directory given to `river up` (default: ~/.local/share/river).
    #[arg(long, env = "RIVER_UP_DIR")]
    pub state_dir: Option<PathBuf>,
}
