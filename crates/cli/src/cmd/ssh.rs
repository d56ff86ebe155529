//! `river ssh`, `river ssh-proxy`, `river ssh-config`: the user's own OpenSSH client, with river as
//! its `ProxyCommand`, so their keys, agent, `~/.ssh/config`, `scp` and VS Code Remote just work.
//! The proxy is a `Forward` stream to the task's port 22 carrying stdin and stdout.

use crate::cmd::forward::Mesh;
use anyhow::{bail, Context as _};
use river_proto::msg::ForwardOpen;
use std::path::Path;
use std::process::ExitCode;
use tokio::io::AsyncWriteExt as _;

/// `42` or `river-42`.
fn task_id(s: &str) -> anyhow::Result<u64> {
    s.strip_prefix("river-")
        .unwrap_or(s)
        .parse()
        .with_context(|| format!("{s:?} is not a task: use its number, like 42 or river-42"))
}

/// `'…'` quoting for the shell that ssh runs `ProxyCommand` with.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How ssh should call this binary back: `'/path/river' [--config-dir 'DIR'] ssh-proxy`.
fn proxy_command(config_dir: Option<&Path>) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the river binary")?;
    let mut cmd = quote(&exe.display().to_string());
    if let Some(d) = config_dir {
        cmd.push_str(&format!(" --config-dir {}", quote(&d.display().to_string())));
    }
    cmd.push_str(" ssh-proxy");
    Ok(cmd)
}

pub fn ssh(config_dir: Option<&Path>, id: &str, user: &str, port: u16, args: Vec<String>) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;
    let id = task_id(id)?;
    let proxy = format!("ProxyCommand={} %n {port}", proxy_command(config_dir)?);
    // ssh parses options after the destination too, so `river ssh 42 -L 8888:… cmd` works.
    let err = std::process::Command::new("ssh")
        .args(["-o", &proxy, "-l", user, &format!("river-{id}")])
        .args(&args)
        .exec();
    bail!("could not run ssh ({err}); install the OpenSSH client")
}

pub async fn proxy(dir: &Path, id: &str, port: u16) -> anyhow::Result<()> {
    let task = task_id(id)?;
    let mesh = Mesh::new(dir);
    crate::cmd::connect::wait_running(&*mesh.client().await?, task).await?;
    let (mut send, mut recv) = mesh.open(&ForwardOpen { task, port, udp: false }).await?;
    let mut input = crate::cmd::connect::stdin_chunks();
    let up = async {
        while let Some(Some(chunk)) = input.recv().await {
            send.write_all(&chunk).await?;
        }
        let _ = send.finish();
        anyhow::Ok(())
    };
    let down = async {
        let mut out = tokio::io::stdout();
        while let Some(chunk) = recv.read_chunk(64 * 1024, true).await? {
            out.write_all(&chunk.bytes).await?;
            out.flush().await?;
        }
        anyhow::Ok(())
    };
    // ssh ends the session by closing our output's reader or our input: either way we are done
    // once the task's side has finished. A far side that stopped reading our input still sends
    // its last bytes (the command's exit status among them): they are read to the end.
    tokio::pin!(up, down);
    tokio::select! {
        r = &mut down => r?,
        r = &mut up => {
            if let Err(e) = r {
                tracing::debug!("input toward the task ended: {e}");
            }
            down.await?;
        }
    }
    Ok(())
}

pub fn config(config_dir: Option<&Path>, user: &str) -> anyhow::Result<()> {
    println!("# river: `ssh river-ID` reaches task ID through the cluster (river ssh-config)");
    println!("Host river-*");
    println!("  User {user}");
    println!("  ProxyCommand {} %n 22", proxy_command(config_dir)?);
    Ok(())
}
