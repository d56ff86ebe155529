//! `river vps …`: VPSs, their keys and snapshots.

use super::WorkArgs;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum VpsCmd {
    /// Create a VPS; it waits in the queue like a task until its resources are free.
    #[command(
        after_help = "Examples:\n  river vps create --image debian:bookworm -c 4 -m 16G --name dev\n  river vps create --env torch --gpus 1 --ssh-key ~/.ssh/lab.pub -t gpu-01\n  river ssh 42                      # then log in (river serves SSH; the image needs no sshd)"
    )]
    Create(Box<VpsCreateArgs>),
    /// List VPSs (those not removed; -a: all).
    #[command(after_help = "Example:\n  river vps list -a -o json")]
    List {
        /// Include removed and failed VPSs.
        #[arg(short, long)]
        all: bool,
    },
    /// Show one VPS.
    Status { id: u64 },
    /// Stop a VPS: its processes end, its container and files are kept (cores and memory are
    /// freed).
    #[command(after_help = "Example:\n  river vps stop 42 && river vps start 42")]
    Stop {
        id: u64,
        /// Return once the node is told, without waiting for the VPS to have stopped.
        #[arg(long)]
        no_wait: bool,
    },
    /// Start a stopped VPS again on its node, with its files as they were; or, with --on, on
    /// another node from a snapshot (taken now if its node is up, else its latest).
    #[command(
        after_help = "Examples:\n  river vps start 42 --wait\n  river vps start 42 --on gpu-02   # move it: its files go along, its overlay address changes"
    )]
    Start {
        id: u64,
        /// Start it on this node instead, from a snapshot.
        #[arg(long, value_name = "NODE")]
        on: Option<String>,
        /// Wait until it runs.
        #[arg(short, long)]
        wait: bool,
    },
    /// Snapshot a VPS's disk (running, paused or stopped); `snapshot list|rm` manage them. The
    /// host keeps snapshots, so a VPS can start from one on any node.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "Examples:\n  river vps snapshot 42 -m 'before upgrading CUDA'\n  river vps snapshot list 42\n  river vps restore 42 3\n  river vps snapshot rm 42 3"
    )]
    Snapshot(VpsSnapshotArgs),
    /// Start a stopped VPS from one of its snapshots: its disk is replaced by the snapshot's.
    #[command(after_help = "Example:\n  river vps stop 42 && river vps restore 42 3 --wait")]
    Restore {
        id: u64,
        /// The snapshot's number (`river vps snapshot list ID`).
        snapshot: u32,
        /// Wait until it runs.
        #[arg(short, long)]
        wait: bool,
    },
    /// Stop a VPS and start it again.
    #[command(after_help = "Example:\n  river vps restart 42")]
    Restart { id: u64 },
    /// Pause a running VPS (its processes are frozen); returns once it is paused.
    Pause {
        id: u64,
        #[arg(long)]
        no_wait: bool,
    },
    /// Resume a paused VPS; returns once it runs again.
    Resume {
        id: u64,
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove a VPS: its container and files are deleted (asked to confirm on a terminal).
    #[command(after_help = "Example:\n  river vps rm 42 -y")]
    Rm {
        id: u64,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
    /// The SSH keys that may log in to a VPS.
    #[command(subcommand)]
    Keys(VpsKeysCmd),
    /// Let a colleague reach a VPS: `river ssh`, `connect`, `forward` and the SSH gateway (with
    /// their own keys from `river user key add`); stopping, removing and snapshots stay yours.
    #[command(after_help = "Example:\n  river vps share 42 bob      # bob: river ssh 42")]
    Share { id: u64, user: String },
    /// Who a VPS is shared with.
    #[command(after_help = "Example:\n  river vps shares 42")]
    Shares { id: u64 },
    /// Stop sharing a VPS with someone; what they have open is closed.
    #[command(after_help = "Example:\n  river vps unshare 42 bob")]
    Unshare { id: u64, user: String },
}

#[derive(Debug, Args)]
pub struct VpsSnapshotArgs {
    #[command(subcommand)]
    pub cmd: Option<VpsSnapshotCmd>,
    /// The VPS to snapshot.
    #[arg(required = true)]
    pub id: Option<u64>,
    /// A note to remember it by.
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VpsSnapshotCmd {
    /// A VPS's snapshots, oldest first.
    List { id: u64 },
    /// Remove a snapshot.
    Rm { id: u64, snapshot: u32 },
}

#[derive(Debug, Subcommand)]
pub enum VpsKeysCmd {
    /// Let another key log in (an OpenSSH public key file, like ~/.ssh/id_ed25519.pub).
    #[command(after_help = "Example:\n  river vps keys add 42 alice.pub")]
    Add { id: u64, file: PathBuf },
    /// Stop a key logging in: its file, its `TYPE BASE64` text or its comment.
    #[command(after_help = "Examples:\n  river vps keys rm 42 alice.pub\n  river vps keys rm 42 alice@laptop")]
    Rm { id: u64, key: String },
    /// The keys a VPS accepts.
    List { id: u64 },
}

#[derive(Debug, Args)]
pub struct VpsCreateArgs {
    /// Where to run: HOST, HOST:NUMA, HOST::GPU,GPU or HOST:NUMA::GPU,GPU (default: placed by the
    /// scheduler).
    #[arg(short, long = "target")]
    pub target: Option<String>,
    #[command(flatten)]
    pub work: WorkArgs,
    /// A public key that may log in (repeatable); default: ~/.ssh/id_ed25519.pub, else
    /// ~/.ssh/id_rsa.pub.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// Use the image's own sshd on port 22 instead of river's SSH (it must start it itself).
    #[arg(long)]
    pub image_sshd: bool,
    /// Run at an address reserved with `river ip reserve`.
    #[arg(long, value_name = "TOKEN")]
    pub ip_token: Option<String>,
    /// Wait until it runs.
    #[arg(short, long)]
    pub wait: bool,
    /// What the VPS runs (default: nothing but staying up).
    #[arg(last = true)]
    pub command: Vec<String>,
}
