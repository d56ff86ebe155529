//! `river task …`.

use crate::args::{Output, SubmitArgs, TaskCmd};
use crate::client::{now_s, once, Client};
use crate::output::{ago, show, table};
use anyhow::{bail, Context as _};
use river_proto::msg::{MountSpec, Request, Response, Signal, TaskSpec, TaskView, TASK_PAGE_MAX};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(cmd: TaskCmd, dir: &Path, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCmd::Submit(a) => return submit(*a, dir, output).await,
        TaskCmd::List {
            state,
            node,
            limit,
            before,
            all,
            mine,
            owner,
        } => {
            let owner = match (mine, owner) {
                (true, _) => Some(crate::client::me(dir)?),
                (false, Some(o)) => Some(if o.starts_with("user ") { o } else { format!("user {o}") }),
                (false, None) => None,
            };
            let query = Request::TaskList {
                state,
                node,
                before,
                limit: None,
                vps: false,
                owner,
            };
            let (tasks, total) = pages(dir, query, (!all).then_some(limit)).await?;
            show(output, &tasks, |t| list(t))?;
            let oldest = tasks.first().map_or(0, |t| t.id);
            let shown = tasks.len() as u64;
            if !all && shown < total && output == Output::Table && before.is_none_or(|b| oldest < b) {
                eprintln!(
                    "{shown} of {total} matching tasks; older ones: `river task list --before {oldest}`, or all of them: `--all`"
                );
            }
        }
        TaskCmd::Status { id, history: false } => {
            let Response::Task(t) = once(dir, Request::TaskShow { id }).await? else {
                bail!("unexpected answer")
            };
            show(output, &t, |t| detail(t))?;
        }
        TaskCmd::Status { id, history: true } => {
            let client = Client::connect(dir).await?;
            let (Response::Task(task), Response::TaskHistory(history)) = (
                client.call(Request::TaskShow { id }).await?,
                client.call(Request::TaskHistory { id }).await?,
            ) else {
                bail!("unexpected answer")
            };
            let both = serde_json::json!({ "task": task, "history": history });
            show(output, &both, |_| {
                detail(&task);
                println!();
                let rows = history
                    .iter()
                    .map(|c| {
                        vec![
                            ago(c.at_ms / 1000, now_s()),
                            c.state.clone(),
                            c.exit_code.map_or(String::new(), |e| e.to_string()),
                            c.message.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(&["WHEN", "STATE", "EXIT", "WHY"], rows);
            })?;
        }
        TaskCmd::Kill { id } | TaskCmd::Cancel { id } => signal(dir, id, Signal::Kill).await?,
        TaskCmd::Pause { id, no_wait } => signal_and_wait(dir, id, Signal::Pause, no_wait).await?,
        TaskCmd::Resume { id, no_wait } => signal_and_wait(dir, id, Signal::Resume, no_wait).await?,
        TaskCmd::Approve { id } => crate::cmd::vps::done(once(dir, Request::TaskApprove { id }).await?)?,
        TaskCmd::Reject { id, reason } => crate::cmd::vps::done(once(dir, Request::TaskReject { id, reason }).await?)?,
        TaskCmd::Logs { id, stderr, follow } => logs(dir, id, stderr, follow).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `signal` and, unless `no_wait`, returns once the task is in the state it leads to (a
/// VPS stopped, a task paused or running again): `river vps stop 3 && river vps start 3` works.
pub(crate) async fn signal_and_wait(dir: &Path, id: u64, signal: Signal, no_wait: bool) -> anyhow::Result<()> {
    let client = Client::connect(dir).await?;
    let Response::Done { message } = client.call(Request::TaskSignal { id, signal }).await? else {
        bail!("unexpected answer")
    };
    let want = match signal {
        Signal::Pause => "paused",
        Signal::Resume => "running",
        Signal::Stop => "stopped",
        Signal::Kill => "killed",
    };
    // A queued VPS is cancelled rather than stopped: that is done already.
    if no_wait || message.starts_with("cancelled") {
        client.close().await;
        println!("{message}");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut was = String::new();
    loop {
        // Answered as soon as the state moves on from the last one seen.
        let t = crate::cmd::follow::wait_past(&client, id, &[was.as_str()], Duration::from_secs(2)).await?;
        was.clone_from(&t.state);
        if t.state == want {
            break;
        }
        if ["completed", "failed", "killed", "oom"].contains(&t.state.as_str()) {
            client.close().await;
            bail!(
                "task {id} ended {} instead{}",
                t.state,
                t.message.map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        if std::time::Instant::now() > deadline {
            client.close().await;
            bail!("task {id} is still {} two minutes after it was told to be {want}; it may yet be (`river task status {id}`)", t.state);
        }
    }
    client.close().await;
    println!("task {id} is {want}");
    Ok(())
}

async fn signal(dir: &Path, id: u64, signal: Signal) -> anyhow::Result<()> {
    let Response::Done { message } = once(dir, Request::TaskSignal { id, signal }).await? else {
        bail!("unexpected answer")
    };
    println!("{message}");
    Ok(())
}

pub(crate) fn parse_spec(a: SubmitArgs) -> anyhow::Result<TaskSpec> {
    // Parse at the edge, so mistakes are reported before anything is sent.
    for t in &a.targets {
        river_task::target::Target::parse(t).map_err(|e| anyhow::anyhow!(e))?;
    }
    let memory_bytes = a
        .work
        .memory
        .as_deref()
        .map(river_task::size::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    let env = a
        .work
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("invalid --env-var {kv:?}: use NAME=VALUE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mounts = a
        .work
        .mounts
        .iter()
        .map(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            match parts.as_slice() {
                [src, dst] => Ok(MountSpec {
                    source: (*src).into(),
                    target: (*dst).into(),
                    read_only: false,
                }),
                [src, dst, "ro"] => Ok(MountSpec {
                    source: (*src).into(),
                    target: (*dst).into(),
                    read_only: true,
                }),
                _ => bail!("invalid --mount {m:?}: use SRC:DST or SRC:DST:ro"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for m in &mounts {
        if !m.source.starts_with('/') || !m.target.starts_with('/') {
            bail!("invalid --mount {}:{}: both paths must be absolute", m.source, m.target);
        }
    }
    Ok(TaskSpec {
        command: a.command,
        image: a.work.image.unwrap_or_default(),
        environment: a.work.environment,
        no_container: a.no_container,
        env: env.into(),
        cores: a.work.cores,
        memory_bytes,
        gpus: a.work.gpus,
        targets: a.targets,
        mounts,
        workdir: a.workdir,
        name: a.work.name,
        privileged: a.privileged,
        network: a.work.network,
        ip_token: a.ip_token.map(river_proto::msg::Secret),
        nodes: a.nodes,
        group: a.group,
        vps: None,
    })
}

async fn submit(a: SubmitArgs, dir: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let (wait, kill_on_interrupt) = (a.wait, a.kill_on_interrupt);
    let spec = parse_spec(a)?;
    let client = Client::connect(dir).await?;
    let Response::TaskSubmitted { batch, ids } = client.call(Request::TaskSubmit(spec)).await? else {
        bail!("unexpected answer")
    };
    // One task, on a terminal's terms: its output here as it runs.
    if wait && ids.len() == 1 && matches!(output, Output::Table) {
        return crate::cmd::follow::attached(client, ids[0], kill_on_interrupt).await;
    }
    if !wait {
        let pending = match client.call(Request::TaskShow { id: ids[0] }).await? {
            Response::Task(t) => t.state == "pending_approval",
            _ => false,
        };
        client.close().await;
        let v = serde_json::json!({ "batch": batch, "ids": ids });
        show(output, &v, |_| {
            for id in &ids {
                println!("{id}");
            }
            if pending {
                eprintln!(
                    "submitted {}; on this cluster it waits for an operator's approval (`river task status {}` shows when)",
                    plural(ids.len()),
                    ids[0]
                );
            } else {
                eprintln!(
                    "submitted {}; follow with `river task status {}`",
                    plural(ids.len()),
                    ids[0]
                );
            }
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    // --wait: until every task of the batch has ended; exit with the code of the task that failed first.
    let mut progress = crate::output::Progress::new("fetching the environment");
    let last = loop {
        let mut now = Vec::new();
        for id in &ids {
            let Response::Task(t) = client.call(Request::TaskShow { id: *id }).await? else {
                bail!("unexpected answer")
            };
            now.push(*t);
        }
        if now
            .iter()
            .all(|t| ["completed", "failed", "killed", "oom"].contains(&t.state.as_str()))
        {
            progress.clear();
            break now;
        }
        progress.show(now.iter().find_map(|t| t.fetch));
        // Until the first that has not ended changes (at once), or a moment for the bar.
        if let Some(t) = now
            .iter()
            .find(|t| !["completed", "failed", "killed", "oom"].contains(&t.state.as_str()))
        {
            crate::cmd::follow::wait_past(&client, t.id, &[t.state.as_str()], Duration::from_millis(250)).await?;
        }
    };
    client.close().await;
    show(output, &last, |tasks| {
        for t in tasks {
            eprintln!(
                "task {} {}{}",
                t.id,
                t.state,
                t.exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default()
            );
            if let Some(m) = &t.message {
                eprintln!("  {m}");
            }
        }
    })?;
    // The task that failed first: in a group, the cause, not the members ended because of it.
    let code = last
        .iter()
        .filter(|t| t.state != "completed")
        .min_by_key(|t| (t.finished_at_ms.unwrap_or(i64::MAX), t.id))
        .map_or(0, |t| t.exit_code.unwrap_or(1));
    Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).context("exit code")?))
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 task".into()
    } else {
        format!("{n} tasks")
    }
}

pub(crate) fn list(tasks: &[TaskView]) {
    if tasks.is_empty() {
        println!("no tasks");
        return;
    }
    let rows = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone().unwrap_or_default(),
                t.state.clone(),
                t.placement.as_ref().map_or("-".into(), |p| p.node.clone()),
                t.spec.cores.to_string(),
                t.exit_code.map_or(String::new(), |c| c.to_string()),
                ago(t.submitted_at_ms / 1000, now_s()),
                t.spec.command.join(" "),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "STATE", "NODE", "CORES", "EXIT", "SUBMITTED", "COMMAND"],
        rows,
    );
}

pub(crate) fn detail(t: &TaskView) {
    println!(
        "task:      {}{}",
        t.id,
        t.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
    );
    println!("state:     {}", t.state);
    if let Some(why) = &t.waiting {
        println!("waiting:   {why}");
    }
    println!("owner:     {}", t.owner);
    println!("command:   {}", t.spec.command.join(" "));
    match &t.spec.environment {
        Some(env) => println!("env:       {env} ({})", t.spec.image),
        None => println!("image:     {}", t.spec.image),
    }
    if let Some((done, total)) = t.fetch {
        println!(
            "fetching:  the environment, {} of {}",
            crate::output::bytes(done),
            crate::output::bytes(total)
        );
    }
    if let Some(p) = &t.placement {
        let numa = p.numa.map(|n| format!(", NUMA {n}")).unwrap_or_default();
        println!("node:      {} (cores {:?}{numa}, GPUs {:?})", p.node, p.cores, p.gpus);
        if let Some(ip) = &p.ip {
            println!("address:   {ip} (overlay)");
        }
    }
    if let Some(vps) = &t.spec.vps {
        if vps.image_sshd {
            println!("ssh:       the image's own sshd (port 22)");
        } else {
            println!(
                "ssh:       river ssh {} ({} key(s); `river vps keys list {}`)",
                t.id,
                vps.ssh_keys.len(),
                t.id
            );
        }
    }
    if let Some(rank) = t.assigned.rank {
        println!("group:     member {rank} of batch {}", t.batch);
    }
    if let Some(c) = t.exit_code {
        println!("exit code: {c}");
    }
    if let Some(m) = &t.message {
        println!("message:   {m}");
    }
    println!("submitted: {}", ago(t.submitted_at_ms / 1000, now_s()));
}

/// Tasks matching `query` (a `TaskList`), newest first from the host a page at a time, up to
/// `want` (all without it); returned oldest first, with how many match in all.
pub(crate) async fn pages(dir: &Path, mut query: Request, want: Option<u32>) -> anyhow::Result<(Vec<TaskView>, u64)> {
    let client = Client::connect(dir).await?;
    let mut out: Vec<TaskView> = Vec::new();
    let total = loop {
        let room = want
            .map_or(TASK_PAGE_MAX, |w| w.saturating_sub(out.len() as u32))
            .min(TASK_PAGE_MAX);
        if let Request::TaskList { limit, .. } = &mut query {
            *limit = Some(room);
        }
        let Response::Tasks { tasks, total } = client.call(query.clone()).await? else {
            bail!("unexpected answer")
        };
        let last = tasks.last().map(|t| t.id);
        out.extend(tasks);
        let enough = want.is_some_and(|w| out.len() >= w as usize);
        match (last, &mut query) {
            (Some(id), Request::TaskList { before, .. }) if !enough => *before = Some(id),
            _ => break total,
        }
    };
    client.close().await;
    out.reverse();
    Ok((out, total))
}

/// `logs`: the host relays the task's output from its node as a stream, however large; with
/// `follow`, as it is written, until the task ends.
async fn logs(dir: &Path, id: u64, stderr: bool, follow: bool) -> anyhow::Result<()> {
    let client = Client::connect(dir).await?;
    if follow {
        // A task that has not started has no output yet: following it waits for it (so
        // `submit && logs -f` works), saying so.
        crate::cmd::follow::until_started(&client, id).await?;
    }
    crate::cmd::follow::stream(&client, id, stderr, follow, tokio::io::stdout()).await?;
    client.close().await;
    Ok(())
}
