//! `river token`, `river user` and `river login`: who may join the cluster, and as whom.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a join token for runners.
    #[command(after_help = "Example:\n  river token create --ttl 2h --uses 5")]
    Create {
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// How many runners may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token so no one can join with it.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Invite a new user: prints a one-time token for `river login` (an existing name is refused;
    /// see `river user reissue`).
    #[command(after_help = "Example:\n  river user invite ann --role operator --ttl 24h")]
    Invite {
        name: String,
        /// viewer, user, operator or admin.
        #[arg(long, default_value = "user")]
        role: String,
        /// How long the invite is valid.
        #[arg(long, default_value = "72h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Let an existing user log in again (a new laptop, a lost key): a one-time token for `river
    /// login`. Their role stays; when they use it, every earlier certificate of theirs stops
    /// working and what it has open is closed. Admins only.
    #[command(after_help = "Example:\n  river user reissue ann --ttl 24h")]
    Reissue {
        name: String,
        /// How long the token is valid.
        #[arg(long, default_value = "72h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Remove a user at once: every certificate of theirs stops working, what they have open
    /// (terminals, forwards, SSH sessions) is closed, their gateway keys go. Their tasks run on
    /// unless `--kill-tasks`. Operators remove viewers and users; admins anyone but themselves.
    #[command(after_help = "Examples:\n  river user rm bob\n  river user rm bob --kill-tasks")]
    Rm {
        name: String,
        /// Kill their tasks and VPSs too.
        #[arg(long)]
        kill_tasks: bool,
    },
    /// Give a user another role (never above your own); their open connections are closed so
    /// it counts at once.
    #[command(name = "set-role", after_help = "Example:\n  river user set-role bob viewer")]
    SetRole {
        name: String,
        /// viewer, user, operator or admin.
        role: String,
    },
    /// Stop a user from connecting, keeping everything of theirs; what they have open is closed.
    #[command(after_help = "Example:\n  river user disable bob      # `river user enable bob` undoes it")]
    Disable { name: String },
    /// Let a disabled user connect again.
    Enable { name: String },
    /// List users.
    List,
    /// Your SSH public keys, which the host's SSH gateway lets in (`ssh -J river@HOST:PORT`).
    #[command(subcommand)]
    Key(UserKeyCmd),
    /// API tokens: how scripts and CI call the HTTPS API (`Authorization: Bearer TOKEN`) as you.
    #[command(subcommand)]
    Token(UserTokenCmd),
    /// Show a user's limits (yours without NAME), or set them (operators): tasks waiting, cores
    /// and GPUs held at once, VPSs, archives kept. 0 means no limit; the rest follow the host
    /// config.
    #[command(
        after_help = "Examples:\n  river user limits\n  river user limits ann --running-cores 16 --running-gpus 2\n  river user limits ann --reset"
    )]
    Limits(LimitArgs),
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    pub name: Option<String>,
    /// Tasks they may have waiting (queued or for approval).
    #[arg(long)]
    pub queued: Option<u32>,
    /// Cores their tasks may hold at once; more wait.
    #[arg(long)]
    pub running_cores: Option<u32>,
    /// GPUs their tasks may hold at once; more wait.
    #[arg(long)]
    pub running_gpus: Option<u32>,
    /// VPSs they may have.
    #[arg(long)]
    pub vps: Option<u32>,
    /// MiB of archives the host keeps for them (environment versions, VPS snapshots).
    #[arg(long)]
    pub archive_mib: Option<u32>,
    /// Back to the cluster's defaults (then the values given, if any).
    #[arg(long)]
    pub reset: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserTokenCmd {
    /// Make a token; it is printed once (the host keeps only a hash). It acts as you, at most
    /// with `--role`, and never above your role when it is used.
    #[command(
        after_help = "Example:\n  river user token create --name ci --ttl 30d --role viewer\n  curl --cacert ca.crt -H \"Authorization: Bearer $TOKEN\" https://HOST:7443/api/tasks"
    )]
    Create {
        /// A name to list and revoke it by.
        #[arg(long)]
        name: String,
        /// How long it is valid (at most 366 days).
        #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// viewer, user, operator or admin; default: your role.
        #[arg(long)]
        role: Option<String>,
    },
    /// Your tokens (or, for operators and admins, someone's with --user): never their secrets.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token: it stops working at once.
    #[command(after_help = "Example:\n  river user token revoke ci")]
    Revoke {
        name: String,
        /// Someone else's token (operators and admins, for those they manage).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserKeyCmd {
    /// Register a public key (an OpenSSH .pub file) for the SSH gateway.
    #[command(
        after_help = "Example:\n  river user key add ~/.ssh/id_ed25519.pub\n  ssh -J river@HOST:7443 root@vps-42"
    )]
    Add { file: PathBuf },
    /// Your registered keys.
    List,
    /// Remove a key: its file, its `TYPE BASE64` text, its SHA256 fingerprint or its comment.
    Rm { key: String },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The host, HOST[:PORT].
    pub host: String,
    /// Invite token from `river user invite`.
    #[arg(long, env = "RIVER_LOGIN_TOKEN", hide_env_values = true)]
    pub token: String,
}
