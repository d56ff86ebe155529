//! `river vps …`: a VPS is a task the host keeps (stopped and started rather than ended) and
//! whose SSH river serves; see `host/src/vps.rs`.

use crate::args::{Output, SubmitArgs, VpsCmd, VpsCreateArgs, VpsKeysCmd, VpsSnapshotCmd};
use crate::client::{now_s, once, Client};
use crate::output::{ago, bytes, show, table};
use anyhow::{bail, Context as _};
use river_proto::msg::{Request, Response, Signal, TaskView, VpsSnapshot, VpsSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn run(cmd: VpsCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        VpsCmd::Create(a) => create(*a, dir, output).await,
        VpsCmd::List { all } => {
            let query = Request::TaskList {
                state: None,
                node: None,
                before: None,
                limit: None,
                vps: true,
                owner: None,
            };
            let (tasks, _) = crate::cmd::task::pages(dir, query, None).await?;
            let vpss: Vec<TaskView> = tasks
                .into_iter()
                .filter(|t| t.spec.vps.is_some())
                .filter(|t| all || !matches!(t.state.as_str(), "completed" | "failed" | "killed" | "oom"))
                .collect();
            show(output, &vpss, |v| crate::cmd::task::list(v))
        }
        VpsCmd::Status { id } => {
            let t = vps(dir, id).await?;
            show(output, &t, crate::cmd::task::detail)
        }
        VpsCmd::Stop { id, no_wait } => signal(dir, id, Signal::Stop, no_wait).await,
        VpsCmd::Pause { id, no_wait } => signal(dir, id, Signal::Pause, no_wait).await,
        VpsCmd::Resume { id, no_wait } => signal(dir, id, Signal::Resume, no_wait).await,
        VpsCmd::Start { id, on, wait } => {
            // Moved to another node, it starts there from its latest snapshot.
            let fetching = if on.is_some() {
                "fetching the snapshot"
            } else {
                "fetching the environment"
            };
            done(once(dir, Request::VpsStart { id, on }).await?)?;
            if wait {
                wait_for(dir, id, "running", fetching).await?;
            }
            Ok(())
        }
        VpsCmd::Restart { id } => {
            signal(dir, id, Signal::Stop, false).await?;
            done(once(dir, Request::VpsStart { id, on: None }).await?)?;
            wait_for(dir, id, "running", "fetching the environment").await
        }
        VpsCmd::Restore { id, snapshot, wait } => {
            done(once(dir, Request::VpsRestore { id, seq: snapshot }).await?)?;
            if wait {
                wait_for(dir, id, "running", &format!("fetching snapshot {snapshot}")).await?;
            }
            Ok(())
        }
        VpsCmd::Snapshot(a) => match (a.cmd, a.id) {
            (Some(VpsSnapshotCmd::List { id }), _) => {
                let Response::Snapshots(snaps) = once(dir, Request::VpsSnapshots { id }).await? else {
                    bail!("unexpected answer")
                };
                show(output, &snaps, |s| snapshot_table(s))
            }
            (Some(VpsSnapshotCmd::Rm { id, snapshot }), _) => {
                done(once(dir, Request::VpsSnapshotRm { id, seq: snapshot }).await?)
            }
            (None, Some(id)) => {
                eprintln!("snapshotting VPS {id} (its node commits the container and sends it to the host)…");
                let client = Client::connect(dir).await?;
                let asked = client.call(Request::VpsSnapshot { id, message: a.message });
                let label = format!("snapshot of VPS {id}");
                let answer = crate::cmd::ops::with_progress(&client, format!("snapshot:{id}"), &label, asked).await;
                client.close().await;
                let Response::Snapshot(s) = answer? else {
                    bail!("unexpected answer")
                };
                show(output, &s, |s| {
                    println!("{}", s.seq);
                    eprintln!(
                        "snapshot {} of VPS {id}: {} from {}; `river vps restore {id} {}` goes back to it",
                        s.seq,
                        bytes(s.archive.size),
                        s.node,
                        s.seq
                    );
                })
            }
            (None, None) => bail!("give the VPS to snapshot: river vps snapshot ID"),
        },
        VpsCmd::Rm { id, yes } => {
            if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                let v = vps(dir, id).await?;
                eprint!(
                    "remove VPS {id}{} ({}): its container and files are deleted for good; its snapshots go too. Remove it? [y/N] ",
                    v.name.map(|n| format!(" ({n})")).unwrap_or_default(),
                    v.state
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("VPS {id} was not removed");
                }
            }
            done(once(dir, Request::VpsRemove { id }).await?)
        }
        VpsCmd::Share { id, user } => done(once(dir, Request::VpsShare { id, user, share: true }).await?),
        VpsCmd::Unshare { id, user } => done(once(dir, Request::VpsShare { id, user, share: false }).await?),
        VpsCmd::Shares { id } => {
            let Response::SharedWith(users) = once(dir, Request::VpsShares { id }).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &users, |users| {
                if users.is_empty() {
                    eprintln!("VPS {id} is shared with no one (`river vps share {id} USER`)");
                }
                for u in users {
                    println!("{u}");
                }
            })
        }
        VpsCmd::Keys(VpsKeysCmd::Add { id, file }) => {
            let keys = read_keys(&file)?;
            let t = keys_changed(
                once(
                    dir,
                    Request::VpsKeys {
                        id,
                        add: keys,
                        remove: Vec::new(),
                    },
                )
                .await?,
            )?;
            eprintln!("VPS {id} accepts {} key(s)", count(&t));
            Ok(())
        }
        VpsCmd::Keys(VpsKeysCmd::Rm { id, key }) => {
            // A file's keys, or the text given (a key or its comment).
            let remove = match std::fs::metadata(&key) {
                Ok(m) if m.is_file() => read_keys(Path::new(&key))?,
                _ => vec![key],
            };
            let t = keys_changed(
                once(
                    dir,
                    Request::VpsKeys {
                        id,
                        add: Vec::new(),
                        remove,
                    },
                )
                .await?,
            )?;
            eprintln!("VPS {id} accepts {} key(s)", count(&t));
            Ok(())
        }
        VpsCmd::Keys(VpsKeysCmd::List { id }) => {
            let t = vps(dir, id).await?;
            let keys = t.spec.vps.map(|v| v.ssh_keys).unwrap_or_default();
            show(output, &keys, |keys| {
                for k in keys {
                    println!("{k}");
                }
            })
        }
    }
}

fn snapshot_table(snaps: &[VpsSnapshot]) {
    let now = now_s();
    let rows = snaps
        .iter()
        .map(|s| {
            vec![
                s.seq.to_string(),
                ago(s.created_at_ms / 1000, now),
                bytes(s.archive.size),
                s.node.clone(),
                if s.auto { "auto".into() } else { s.created_by.clone() },
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["SNAPSHOT", "TAKEN", "SIZE", "NODE", "BY", "MESSAGE"], rows);
}

fn count(t: &TaskView) -> usize {
    t.spec.vps.as_ref().map_or(0, |v| v.ssh_keys.len())
}

/// Prints the host's sentence from a `Done` answer.
pub(crate) fn done(r: Response) -> anyhow::Result<()> {
    let Response::Done { message } = r else {
        bail!("unexpected answer")
    };
    println!("{message}");
    Ok(())
}

fn keys_changed(r: Response) -> anyhow::Result<TaskView> {
    let Response::Task(t) = r else {
        bail!("unexpected answer")
    };
    Ok(*t)
}

/// Signals VPS `id` and, unless `no_wait`, returns once it is in the state that leads to.
async fn signal(dir: &Path, id: u64, signal: Signal, no_wait: bool) -> anyhow::Result<()> {
    vps(dir, id).await?;
    crate::cmd::task::signal_and_wait(dir, id, signal, no_wait).await
}

/// VPS `id`, or an error if it is a task.
async fn vps(dir: &Path, id: u64) -> anyhow::Result<TaskView> {
    let Response::Task(t) = once(dir, Request::TaskShow { id }).await? else {
        bail!("unexpected answer")
    };
    if t.spec.vps.is_none() {
        bail!("task {id} is not a VPS; `river task …` manages it");
    }
    Ok(*t)
}

/// The keys in an OpenSSH public key file (one per line; blank lines and comments skipped).
pub(crate) fn read_keys(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("{} has no public key in it", file.display());
    }
    if keys.iter().any(|k| k.contains("PRIVATE KEY")) {
        bail!("{} is a private key; give the .pub file", file.display());
    }
    Ok(keys)
}

/// The user's default public key: `~/.ssh/id_ed25519.pub`, else `~/.ssh/id_rsa.pub`.
fn default_key() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    ["id_ed25519.pub", "id_rsa.pub"]
        .into_iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.is_file())
}

async fn create(a: VpsCreateArgs, dir: &Path, output: Output) -> anyhow::Result<()> {
    let key_files = if !a.ssh_keys.is_empty() {
        a.ssh_keys.clone()
    } else if a.image_sshd {
        Vec::new()
    } else {
        vec![default_key().context(
            "no SSH public key to let you in: give one with --ssh-key FILE, or make one with `ssh-keygen -t ed25519`",
        )?]
    };
    let mut ssh_keys = Vec::new();
    for f in &key_files {
        ssh_keys.extend(read_keys(f)?);
    }
    let wait = a.wait;
    let mut spec = crate::cmd::task::parse_spec(SubmitArgs {
        targets: a.target.into_iter().collect(),
        work: a.work,
        no_container: false,
        workdir: None,
        privileged: false,
        ip_token: a.ip_token,
        nodes: None,
        group: false,
        wait: false,
        kill_on_interrupt: false,
        command: a.command,
    })?;
    spec.vps = Some(VpsSpec {
        ssh_keys,
        image_sshd: a.image_sshd,
        generation: 0,
    });
    let Response::TaskSubmitted { ids, .. } = once(dir, Request::TaskSubmit(spec)).await? else {
        bail!("unexpected answer")
    };
    let id = ids[0];
    if wait {
        wait_for(dir, id, "running", "fetching the environment").await?;
    }
    show(output, &serde_json::json!({ "id": id }), |_| {
        println!("{id}");
        if wait {
            eprintln!("VPS {id} is running; log in with `river ssh {id}`");
        } else {
            eprintln!("created VPS {id}; `river ssh {id}` logs in once it runs (`river vps status {id}`)");
        }
    })
}

/// Waits until VPS `id` is in `state`, showing the progress of a fetch (`fetching`: of what); an
/// error if it ends up anywhere else for good.
async fn wait_for(dir: &Path, id: u64, state: &str, fetching: &str) -> anyhow::Result<()> {
    let client = Client::connect(dir).await?;
    let mut progress = crate::output::Progress::new(fetching);
    let mut was = String::new();
    loop {
        // At once when the state moves on; every 0.2 s meanwhile, for the bar.
        let t = crate::cmd::follow::wait_past(&client, id, &[was.as_str()], Duration::from_millis(200)).await?;
        was.clone_from(&t.state);
        if t.state == state {
            progress.clear();
            break;
        }
        let passing = matches!(t.state.as_str(), "queued" | "assigned" | "lost" | "running" | "paused");
        if !passing {
            progress.clear();
            bail!(
                "VPS {id} is {}{}",
                t.state,
                t.message.map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        progress.show(t.fetch);
    }
    client.close().await;
    Ok(())
}
