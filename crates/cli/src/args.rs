//! Command-line arguments, every command with `--help` and an example.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod host;
mod people;
mod ui;
mod vps;
pub use host::{DownArgs, HostArgs, HostCmd, RunnerArgs, UpArgs};
pub use people::{LimitArgs, LoginArgs, TokenCmd, UserCmd, UserKeyCmd, UserTokenCmd};
pub use ui::{UiArgs, UiCmd};
pub use vps::{VpsCmd, VpsCreateArgs, VpsKeysCmd, VpsSnapshotCmd};

#[derive(Debug, Parser)]
#[command(name = "river", version, about = "A self-hosted cluster manager for GPU labs", long_about = None)]
#[command(after_help = "Start a one-machine cluster:  river up\nThen:                         river status")]
pub struct Cli {
    /// Where the CLI keeps its credentials (ca.crt, cert.pem, key.pem, cluster.toml).
    #[arg(long, global = true, env = "RIVER_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Output format for commands that print data.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host (control plane); back up and restore its state.
    #[command(
        after_help = "Examples:\n  river host --state-dir /var/lib/river/host --advertise head.lab.example\n  river host backup /backups/river-$(date +%F).tar\n  river host restore /backups/river-2026-12-01.tar"
    )]
    Host(HostArgs),
    /// Run a runner (one per compute node).
    #[command(
        after_help = "Examples:\n  RIVER_JOIN_TOKEN=rvt1.… river runner --join head.lab.example:7443   # first start\n  river runner --join head.lab.example:7443 --token-file /root/token  # or so\n  river runner                                                        # later starts"
    )]
    Runner(RunnerArgs),
    /// Start a whole one-machine cluster: a host and a local runner joined to it.
    #[command(
        after_help = "Examples:\n  river up                 # foreground, Ctrl-C stops it\n  river up --detach        # background; `river down` stops it"
    )]
    Up(UpArgs),
    /// Stop a cluster started with `river up --detach`.
    Down(DownArgs),
    /// Cluster summary.
    Status,
    /// Who the CLI is logged in as.
    Whoami,
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Join tokens for runners.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Command tasks: submit, watch, control.
    #[command(subcommand)]
    Task(TaskCmd),
    /// VPSs: persistent containers you SSH into, stopped and started with their files kept.
    #[command(subcommand)]
    Vps(VpsCmd),
    /// A terminal, or one command, in a running task's container.
    #[command(
        after_help = "Examples:\n  river connect 42                 # interactive shell\n  river connect 42 -- nvidia-smi   # one command; exits with its code\n  river connect 42 -- ls / | wc -l"
    )]
    Connect {
        id: u64,
        /// The command (default: bash if the image has it, else sh).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Forward a local port to a port inside a running task (through the host; nothing is exposed
    /// on the node).
    #[command(
        after_help = "Examples:\n  river forward 42 8888                 # Jupyter in task 42 at http://127.0.0.1:8888\n  river forward 42 6006 -l 16006        # TensorBoard at local port 16006\n  river forward 42 8888 --bind 0.0.0.0  # reachable from other machines too\n  river forward 42 5353 --udp           # UDP (a DNS server in task 42)"
    )]
    Forward {
        id: u64,
        /// The port inside the task (its loopback is reached too).
        port: u16,
        /// The local port (default: the same as PORT; 0 picks a free one).
        #[arg(short = 'l', long = "local")]
        local: Option<u16>,
        /// The local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Forward UDP instead of TCP: one flow per local client address, over QUIC datagrams
        /// (larger packets reliably on the flow's stream); lost packets are counted and said.
        #[arg(long)]
        udp: bool,
    },
    /// Open the web dashboard: served on this machine's loopback, logged in as this CLI's user, in
    /// your browser (no certificate to install, no password); or, with `--link`, log a browser in
    /// to the dashboard the host serves at its own address.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:
  river ui                 # opens the dashboard in your browser
  river ui --no-open -p 8080
  ssh -L 8080:127.0.0.1:8080 laptop-to-login-node  # then river ui -p 8080 there
  river ui --link          # https://river.lab.example/login?key=… (the host's [web] address)
  river ui sessions        # browsers logged in there as you
  river ui revoke --all

A printed link logs one browser in, once; every action is checked by the host as the same
user's CLI call would be. Ctrl-C stops the local dashboard."
    )]
    Ui(UiArgs),
    /// SSH into a task with your own OpenSSH client (its keys, agent and config), through the mesh.
    #[command(
        after_help = "Examples:\n  river ssh 42\n  river ssh 42 -i ~/.ssh/lab_ed25519 -L 8888:localhost:8888\n  river ssh 42 nvidia-smi\n  scp -o ProxyCommand='river ssh-proxy %n' model.pt root@river-42:/data/"
    )]
    Ssh {
        id: String,
        /// Login name in the task.
        #[arg(short = 'l', long, default_value = "root")]
        user: String,
        /// The port of sshd inside the task.
        #[arg(short = 'p', long, default_value_t = 22)]
        port: u16,
        /// More ssh arguments (options, then a command), as for `ssh HOST ARGS…`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Carry stdin/stdout to a port in a task: OpenSSH's `ProxyCommand` (what `river ssh` uses).
    #[command(
        name = "ssh-proxy",
        after_help = "Example (~/.ssh/config):\n  Host river-*\n    ProxyCommand river ssh-proxy %n"
    )]
    SshProxy {
        /// The task: `42` or `river-42`.
        id: String,
        #[arg(default_value_t = 22)]
        port: u16,
    },
    /// Print an OpenSSH config stanza so `ssh river-ID`, `scp` and VS Code Remote reach tasks.
    #[command(
        name = "ssh-config",
        after_help = "Example:\n  river ssh-config >> ~/.ssh/config && ssh river-42"
    )]
    SshConfig {
        /// Login name in tasks.
        #[arg(short = 'l', long, default_value = "root")]
        user: String,
    },
    /// Container environments: named, versioned images that nodes fetch over the mesh.
    #[command(subcommand)]
    Env(EnvCmd),
    /// Overlay addresses reserved ahead of a launch (for a master address known in advance).
    #[command(subcommand)]
    Ip(IpCmd),
    /// Users and invitations.
    #[command(subcommand)]
    User(UserCmd),
    /// The audit trail, newest first: joins, logins, reissues, role changes, removals, refusals
    /// (operators).
    #[command(after_help = "Examples:\n  river audit --user bob\n  river audit --since 24h --limit 500 -o json")]
    Audit {
        /// Only what this user did, or what was done to their account.
        #[arg(long)]
        user: Option<String>,
        /// Only events this recent (`90m`, `24h`, `7d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// At most this many (up to 5000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Log in to a cluster with an invite from `river user invite`.
    #[command(after_help = "Example:\n  river login head.lab.example:7443 --token rvt1.…")]
    Login(LoginArgs),
    /// Log out here: the host revokes this machine's certificate, and the credentials are
    /// deleted (`--local`: only deleted, when the host cannot be reached).
    Logout {
        /// Only delete the credentials here; the certificate stays valid until it expires.
        #[arg(long)]
        local: bool,
    },
    /// Write config files and systemd units.
    #[command(subcommand)]
    Init(InitCmd),
    /// Print a shell completion script: commands, options and their values complete with Tab.
    #[command(
        after_help = "Examples:\n  river completions bash > /etc/bash_completion.d/river\n  river completions zsh > \"${fpath[1]}/_river\"\n  river completions fish > ~/.config/fish/completions/river.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page of river or of one of its commands (roff), or write every page.
    #[command(
        after_help = "Examples:\n  river man task submit | man -l -\n  sudo river man --dir /usr/local/share/man/man1   # then: man river-task-submit"
    )]
    Man {
        /// The command whose page to print (e.g. `task submit`); none: river's own.
        command: Vec<String>,
        /// Write every page into this directory instead (`river.1`, `river-task-submit.1`, …).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

impl Command {
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Host(_) | Command::Runner(_) | Command::Up(_))
    }
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    #[command(after_help = "Example:\n  river node list -o json")]
    List,
    /// Show one node in detail.
    Show { name: String },
    /// Remove a node and revoke its certificate: it can no longer connect.
    #[command(after_help = "Example:\n  river node remove gpu-07")]
    Remove { name: String },
    /// Let a node back in that the host has no record of: after `river host restore` from a
    /// backup older than the node (or its latest certificate), it keeps its tasks and waits.
    #[command(
        after_help = "The host's log names such nodes (\"refused node: no record of it\"); the node must have tried
to connect since the host started.

Example:
  river node admit gpu-07"
    )]
    Admit { name: String },
    /// The overlay network: each node's subnet, underlay address, containers and health.
    #[command(after_help = "Example:\n  river node overlay")]
    Overlay,
}

#[derive(Debug, Subcommand)]
pub enum IpCmd {
    /// Reserve an overlay address; prints it and a token that `--ip-token` claims.
    #[command(
        after_help = "Examples:\n  river ip reserve --node gpu-01                 # any free address on gpu-01\n  river ip reserve --ip 10.128.1.10 --ttl 1h\n  TOKEN=$(river ip reserve --node gpu-01 -o json | jq -r .token)\n  river task submit --ip-token \"$TOKEN\" -- python serve.py"
    )]
    Reserve {
        /// The node whose subnet the address is in (default: the one with most free).
        #[arg(long)]
        node: Option<String>,
        /// A particular address.
        #[arg(long)]
        ip: Option<String>,
        /// How long the reservation waits to be used; once a task uses it, it is held until the
        /// task ends.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Reserved addresses and the tasks using them.
    List,
    /// Give back a reservation that no running task uses.
    #[command(after_help = "Example:\n  river ip release 10.128.1.10")]
    Release { ip: String },
}

#[derive(Debug, Subcommand)]
pub enum InitCmd {
    /// Print (or write) a commented config file with every default.
    #[command(
        after_help = "Example:\n  river init config --host --file /etc/river/host.toml\n  river up --host-config host.toml      # a one-machine cluster configured by it"
    )]
    Config {
        #[arg(long, conflicts_with = "runner", required_unless_present = "runner")]
        host: bool,
        #[arg(long)]
        runner: bool,
        /// Write to this file instead of standard output (never overwrites).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Write a systemd unit for the host or the runner.
    #[command(
        after_help = "Example:\n  river init service --runner --dir /etc/systemd/system && systemctl daemon-reload"
    )]
    Service {
        #[arg(long, conflicts_with = "runner", required_unless_present = "runner")]
        host: bool,
        #[arg(long)]
        runner: bool,
        /// Directory to write the unit into (default: print it).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Submit a command; it waits in the queue until its resources are free.
    #[command(
        after_help = "Examples:\n  river task submit --env torch -c 8 -m 32G --gpus 2 -- python train.py\n  river task submit --image pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime -- python -V\n  river task submit -t gpu-01:0::0,1 --image IMG --wait -- nvidia-smi"
    )]
    Submit(Box<SubmitArgs>),
    /// List tasks.
    #[command(after_help = "Example:\n  river task list -s running --node gpu-01 -o json")]
    #[command(
        after_help = "Shows the newest tasks (100 unless --limit says); older ones page with --before.\n\nExamples:\n  river task list --state running\n  river task list --limit 20 --before 4711\n  river task list --all -o json > tasks.json"
    )]
    List {
        /// Only tasks in this state (pending_approval, queued, assigned, running, paused, completed, failed, killed, oom, lost, stopped).
        #[arg(short, long)]
        state: Option<String>,
        /// Only tasks on this node.
        #[arg(long)]
        node: Option<String>,
        /// How many of the newest tasks to show.
        #[arg(long, default_value_t = 100, conflicts_with = "all")]
        limit: u32,
        /// Only tasks older than this id (the next page).
        #[arg(long)]
        before: Option<u64>,
        /// Every matching task, however many.
        #[arg(long)]
        all: bool,
        /// Only your own tasks.
        #[arg(long, conflicts_with = "owner")]
        mine: bool,
        /// Only this user's tasks.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one task (with `--history`, every state it has been in, when and why).
    #[command(after_help = "Examples:\n  river task status 42\n  river task status 42 --history")]
    Status {
        id: u64,
        #[arg(long)]
        history: bool,
    },
    /// Kill a task (cancels it if it is still queued).
    #[command(after_help = "Example:\n  river task kill 42")]
    Kill { id: u64 },
    /// Cancel a queued task (or kill it if it has started).
    #[command(after_help = "Example:\n  river task cancel 42")]
    Cancel { id: u64 },
    /// Pause a running task (its processes are frozen); returns once it is paused.
    Pause {
        id: u64,
        /// Return once the node is told, without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Resume a paused task; returns once it runs again.
    Resume {
        id: u64,
        #[arg(long)]
        no_wait: bool,
    },
    /// Let a task waiting for approval into the queue, with the rest of its batch (operators;
    /// never your own).
    #[command(after_help = "Example:\n  river task list -s pending_approval\n  river task approve 42")]
    Approve { id: u64 },
    /// Refuse a task waiting for approval, with the rest of its batch: it ends killed, and its
    /// owner reads the reason in `river task status` (operators).
    #[command(after_help = "Example:\n  river task reject 42 --reason \"asks for 8 GPUs; use 2\"")]
    Reject {
        id: u64,
        /// Why, for the task's owner.
        #[arg(long)]
        reason: String,
    },
    /// Print a task's output.
    #[command(after_help = "Examples:\n  river task logs 42 --stderr\n  river task logs -f 42")]
    Logs {
        id: u64,
        /// Standard error instead of standard output.
        #[arg(long)]
        stderr: bool,
        /// Keep printing new output until the task ends.
        #[arg(short, long)]
        follow: bool,
    },
}

/// What tasks and VPSs alike ask for: resources, image, environment, mounts, network.
#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Cores to pin it to.
    #[arg(short, long, default_value_t = 1)]
    pub cores: u32,
    /// Memory limit, like 512M or 8G.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Number of GPUs (or name them in the target).
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Environment to run in, NAME or NAME:vN (`river env list`); default: the `default` environment.
    #[arg(long = "env", value_name = "NAME", conflicts_with = "image")]
    pub environment: Option<String>,
    /// A Docker image instead of an environment: one the nodes have, or can pull.
    #[arg(long)]
    pub image: Option<String>,
    /// Environment variable, K=V (repeatable).
    #[arg(short = 'e', long = "env-var", value_name = "K=V")]
    pub env: Vec<String>,
    /// Bind mount SRC:DST[:ro] from the node (repeatable).
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// A name to find it by.
    #[arg(long)]
    pub name: Option<String>,
    /// `overlay` (containers on all nodes reach each other by address; the default when the
    /// cluster has it) or `bridge` (the engine's own network).
    #[arg(long, value_parser = ["overlay", "bridge"])]
    pub network: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Make an environment from an image that a node has or can pull.
    #[command(
        after_help = "Examples:\n  river env create torch --from pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime\n  river env create base --from debian:bookworm --node gpu-01"
    )]
    Create {
        name: String,
        /// The image to start from.
        #[arg(long)]
        from: String,
        /// The node that saves the image (default: any connected node).
        #[arg(long)]
        node: Option<String>,
    },
    /// Environments and their versions.
    List,
    /// Open a shell in an editing container of the environment (started if needed); changes
    /// are kept by `river env commit`.
    #[command(
        after_help = "Example:\n  river env shell torch      # pip install …, then exit\n  river env commit torch -m 'add transformers'"
    )]
    Shell {
        name: String,
        /// Print the editing container's task id instead of opening a shell.
        #[arg(long)]
        detach: bool,
        /// Start the editing container on this node (`HOST[:NUMA]`).
        #[arg(short = 't', long = "target", value_name = "TARGET")]
        node: Option<String>,
    },
    /// Save the editing container as the environment's next version, and stop it.
    #[command(after_help = "Example:\n  river env commit torch -m 'add transformers'")]
    Commit {
        name: String,
        /// What changed.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Remove an environment and its versions.
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Where to run: HOST, HOST:NUMA, HOST::GPU,GPU or HOST:NUMA::GPU,GPU. Repeat for one task per target.
    #[arg(short, long = "target")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub work: WorkArgs,
    /// Run the command as a process on the node (same core and memory limits, via cgroups, as an
    /// unprivileged user) instead of in a container.
    #[arg(long, conflicts_with_all = ["image", "environment", "mounts"])]
    pub no_container: bool,
    /// Working directory inside the container.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Run with full access to the node (operators only, and only where the host allows it).
    #[arg(long)]
    pub privileged: bool,
    /// Run at an address reserved with `river ip reserve` (and on its node).
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["nodes", "group"])]
    pub ip_token: Option<String>,
    /// A distributed launch: one member on each of N nodes, with MASTER_ADDR, MASTER_PORT,
    /// WORLD_SIZE, NODE_RANK (and torchrun's PET_* settings) set; if one fails, all end.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub nodes: Option<u32>,
    /// Run the targets (-t) as one distributed group, as --nodes does.
    #[arg(long)]
    pub group: bool,
    /// Wait for the task to end, its output streamed to this terminal's stdout and stderr as it
    /// runs, and exit with its exit code (several tasks: a summary of each).
    #[arg(short, long)]
    pub wait: bool,
    /// With --wait: Ctrl-C kills the task (by default it goes on, and you are told how to follow it).
    #[arg(long, requires = "wait")]
    pub kill_on_interrupt: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}
