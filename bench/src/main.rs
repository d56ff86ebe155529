//! river's benchmarks. Each prints its figures next to a baseline measured in the same run.
//! See docs/benchmarks.md for what they measure and the figures on our machines.

mod cli;
mod forward;
mod heartbeats;
mod history;
mod mesh;
mod overlay;
mod proc;
mod tasks;
mod web;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "river benchmarks (not tests: they print figures)")]
struct Cli {
    /// The river binary to measure (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/river", global = true)]
    river: PathBuf,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// N simulated runners, each with its own certificate, heartbeating against a real host.
    Heartbeats {
        /// Numbers of runners to simulate, one run each.
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        runners: Vec<usize>,
        /// Heartbeat interval.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// How long to measure once every runner is connected.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        measure: std::time::Duration,
    },
    /// `river task list` against a host with N tasks in its database, beside a new cluster; and
    /// `river task logs` of a large output, beside `cat` of the runner's file.
    History {
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        /// MiB of output for the `task logs` part (0 skips it; needs Docker).
        #[arg(long, default_value_t = 200)]
        log_mb: usize,
    },
    /// N no-op container tasks through river, against `docker run --rm` in the same run.
    Tasks {
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Baseline runs at a time (river runs one task per core of the node).
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// `--no-container` tasks (needs root for cgroups), against starting `sh -c true`.
        #[arg(long)]
        no_container: bool,
    },
    /// `river forward` and `river ssh` into a task, against direct access and OpenSSH (needs root,
    /// iperf3, ssh and the river-test/sshd image from scripts/docker-env.sh).
    Forward {
        /// Set everything up, print the ports and wait (for measuring by hand, e.g. under perf).
        #[arg(long)]
        hold: bool,
    },
    /// New connection + first echo, and the steady 1-byte round trip, against an echo server at
    /// ADDR (e.g. one that `forward --hold` printed).
    Latency { addr: String },
    /// The mesh transport alone (no TCP ends): one QUIC hop against two through a decrypting
    /// relay and one through a relay that only forwards packets, in one process with a thread per
    /// party. The ceiling under `forward`.
    Mesh {
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// (internal) An echo server, run inside a task's network namespace by `forward`.
    #[command(hide = true)]
    EchoServer { port: u16 },
    /// The overlay's reconcile with N peers, against `ip -batch`/`bridge -batch` (needs root).
    OverlayScale {
        #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
        peers: Vec<usize>,
    },
    /// `river status` against `curl` of `/api/status` with the same certificate, alternating.
    /// With `--wait-runs N` (root, Docker), also `task submit --wait -- true` against `docker run`.
    Cli {
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Runs of `task submit --wait -- true` (container and process) and `docker run --rm`.
        #[arg(long, default_value_t = 0)]
        wait_runs: usize,
    },
    /// The web dashboard in headless Chromium (needs `chromium` and `chromium-driver`): first load
    /// against a static file, a change seen on the page, the task list with N tasks.
    Web {
        #[arg(long, default_value_t = 10)]
        runs: usize,
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
    },
    /// Idle memory of a real host and runner (`river host`, `river runner`).
    Footprint {
        /// How long to let them idle before measuring.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        idle: std::time::Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Bench::EchoServer { port } = cli.bench {
        return forward::echo_server(port);
    }
    if let Bench::Latency { addr } = &cli.bench {
        return forward::latency(addr);
    }
    if let Bench::Mesh { secs } = cli.bench {
        return mesh::run(secs);
    }
    if let Bench::OverlayScale { peers } = &cli.bench {
        return overlay::scale(peers);
    }
    let river = std::fs::canonicalize(&cli.river).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; build it with `cargo build --release -p river`",
            cli.river.display()
        )
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.bench {
            Bench::Heartbeats {
                runners,
                interval,
                measure,
            } => {
                for n in runners {
                    heartbeats::run(&river, n, interval, measure).await?;
                }
                Ok(())
            }
            Bench::Footprint { idle } => heartbeats::footprint(&river, idle).await,
            Bench::Forward { hold } => forward::run(&river, hold).await,
            Bench::EchoServer { .. } | Bench::OverlayScale { .. } | Bench::Latency { .. } | Bench::Mesh { .. } => {
                unreachable!("handled before the runtime starts")
            }
            Bench::Tasks {
                count,
                concurrency,
                no_container,
            } => tasks::run(&river, count, concurrency, no_container).await,
            Bench::History { tasks, log_mb } => history::run(&river, tasks, log_mb).await,
            Bench::Cli { runs, wait_runs } => cli::run(&river, runs, wait_runs).await,
            Bench::Web { runs, tasks } => web::run(&river, runs, tasks).await,
        }
    })
}
