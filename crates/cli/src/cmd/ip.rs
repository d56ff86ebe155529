//! `river ip …`: overlay address reservations.

use crate::args::{IpCmd, Output};
use crate::client::{now_s, once};
use crate::output::{ago, show, table};
use river_proto::msg::{IpView, Request, Response};
use std::path::Path;

pub async fn run(cmd: IpCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        IpCmd::Reserve { node, ip, ttl } => {
            let req = Request::IpReserve {
                node,
                ip,
                ttl_secs: ttl.as_secs().max(1),
            };
            let Response::IpReserved(r) = once(dir, req).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &r, |r| {
                println!("{}", r.ip);
                println!("{}", r.token);
                eprintln!(
                    "reserved {} on {} for {}; use it with `river task submit --ip-token TOKEN …` (the second line)",
                    r.ip,
                    r.node,
                    humantime::format_duration(std::time::Duration::from_secs(
                        u64::try_from((r.expires_at_ms / 1000 - now_s()).max(0)).unwrap_or(0)
                    ))
                );
            })
        }
        IpCmd::List => {
            let Response::Ips(ips) = once(dir, Request::IpList).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &ips, |ips| list(ips))
        }
        IpCmd::Release { ip } => {
            let Response::Done { message } = once(dir, Request::IpRelease { ip }).await? else {
                anyhow::bail!("unexpected answer")
            };
            println!("{message}");
            Ok(())
        }
    }
}

fn list(ips: &[IpView]) {
    if ips.is_empty() {
        println!("no reserved addresses");
        return;
    }
    let now = now_s();
    let rows = ips
        .iter()
        .map(|r| {
            vec![
                r.ip.clone(),
                r.node.clone(),
                r.owner.clone(),
                r.task.map_or_else(|| "-".into(), |t| t.to_string()),
                match r.task {
                    Some(_) => "until the task ends".into(),
                    None => format!("expires {}", ago(r.expires_at_ms / 1000, now)),
                },
            ]
        })
        .collect();
    table(&["IP", "NODE", "OWNER", "TASK", "HELD"], rows);
}
