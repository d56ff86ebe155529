//! `river env …`: container environments.

use crate::args::{EnvCmd, Output};
use crate::client::{now_s, once, Client};
use crate::output::{ago, bytes, show, table};
use anyhow::bail;
use river_proto::msg::{EnvView, Request, Response};
use std::path::Path;

pub async fn run(cmd: EnvCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        EnvCmd::Create { name, from, node } => {
            eprintln!("saving {from} on a node and storing it on the host…");
            let client = Client::connect(dir).await?;
            let key = format!("env:{name}");
            let label = format!("environment {name}");
            let asked = client.call(Request::EnvCreate { name, from, node });
            let answer = crate::cmd::ops::with_progress(&client, key, &label, asked).await;
            client.close().await;
            let Response::Env(e) = answer? else {
                bail!("unexpected answer")
            };
            show(output, &e, |e| versions(e))?;
        }
        EnvCmd::List => {
            let Response::Envs(envs) = once(dir, Request::EnvList).await? else {
                bail!("unexpected answer")
            };
            show(output, &envs, |envs| list(envs))?;
        }
        EnvCmd::Rm { name } => {
            let Response::Done { message } = once(dir, Request::EnvRm { name }).await? else {
                bail!("unexpected answer")
            };
            println!("{message}");
        }
        EnvCmd::Commit { name, message } => {
            eprintln!("committing the editing container of {name}…");
            let client = Client::connect(dir).await?;
            let key = format!("env:{name}");
            let label = format!("environment {name}");
            let asked = client.call(Request::EnvCommit { name, message });
            let answer = crate::cmd::ops::with_progress(&client, key, &label, asked).await;
            client.close().await;
            let Response::Env(e) = answer? else {
                bail!("unexpected answer")
            };
            show(output, &e, |e| versions(e))?;
        }
        EnvCmd::Shell { name, detach, node } => {
            let task = editing_container(dir, &name, node).await?;
            if detach {
                println!("{task}");
                return Ok(());
            }
            let code = crate::cmd::connect::terminal(dir, task, Vec::new()).await?;
            eprintln!("keep the changes with `river env commit {name}`; the container stays until then");
            if code != 0 {
                bail!("the shell exited with code {code}");
            }
        }
    }
    Ok(())
}

/// The task holding the caller's editing container of `name`, once it runs.
async fn editing_container(dir: &Path, name: &str, node: Option<String>) -> anyhow::Result<u64> {
    let client = Client::connect(dir).await?;
    let req = Request::EnvShell {
        name: name.to_owned(),
        node,
    };
    let Response::EnvSession { task, started } = client.call(req).await? else {
        bail!("unexpected answer")
    };
    if started {
        eprintln!("started an editing container of {name} (task {task})");
    }
    crate::cmd::connect::wait_running(&client, task).await?;
    client.close().await;
    Ok(task)
}

fn list(envs: &[EnvView]) {
    if envs.is_empty() {
        println!("no environments");
        return;
    }
    let rows = envs
        .iter()
        .filter_map(|e| {
            let v = e.versions.last()?;
            Some(vec![
                e.name.clone(),
                format!("v{}", v.version),
                v.image.clone(),
                v.archive.as_ref().map_or("registry".into(), |a| bytes(a.size)),
                e.owner.clone(),
                ago(v.created_at_ms / 1000, now_s()),
            ])
        })
        .collect();
    table(&["NAME", "LATEST", "IMAGE", "SIZE", "OWNER", "UPDATED"], rows);
}

fn versions(e: &EnvView) {
    let rows = e
        .versions
        .iter()
        .map(|v| {
            vec![
                format!("v{}", v.version),
                v.image.clone(),
                v.archive.as_ref().map_or("registry".into(), |a| bytes(a.size)),
                v.archive
                    .as_ref()
                    .map_or(String::new(), |a| a.digest.chars().take(12).collect()),
                v.created_by.clone(),
                v.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!("environment {} (owner {})", e.name, e.owner);
    table(&["VERSION", "IMAGE", "SIZE", "SHA256", "BY", "MESSAGE"], rows);
}
