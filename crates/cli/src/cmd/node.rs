//! `river node …` and `river status`.

use crate::args::{NodeCmd, Output};
use crate::client::{now_s, once};
use crate::output::{ago, bytes, show, table};
use river_proto::msg::{NodeView, OverlayView, Request, Response};
use std::path::Path;

pub async fn run(cmd: NodeCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::List => {
            let Response::Nodes(nodes) = once(dir, Request::NodeList).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &nodes, |nodes| list(nodes))
        }
        NodeCmd::Show { name } => {
            let Response::Node(node) = once(dir, Request::NodeShow { name: name.clone() }).await? else {
                anyhow::bail!("unexpected answer")
            };
            // The last hour, summed up under the details (the samples: GET /api/nodes/NAME/usage).
            let history = match once(dir, Request::NodeUsage { name }).await {
                Ok(Response::Usage(samples)) => samples,
                _ => Vec::new(),
            };
            show(output, &node, |n| {
                detail(n);
                for line in hour(&history) {
                    println!("{line}");
                }
            })
        }
        NodeCmd::Overlay => {
            let Response::Overlay(o) = once(dir, Request::Overlay).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &o, |o| overlay(o))
        }
        NodeCmd::Remove { name } => {
            let Response::Done { message } = once(dir, Request::NodeRemove { name }).await? else {
                anyhow::bail!("unexpected answer")
            };
            println!("{message}");
            Ok(())
        }
        NodeCmd::Admit { name } => {
            let Response::Done { message } = once(dir, Request::NodeAdmit { name }).await? else {
                anyhow::bail!("unexpected answer")
            };
            println!("{message}");
            Ok(())
        }
    }
}

fn overlay(o: &OverlayView) {
    if !o.enabled {
        println!("the overlay network is off; an admin turns it on with `[overlay] enabled = true` in the host config");
        return;
    }
    println!("overlay {} (VXLAN id {}, UDP port {})", o.range, o.vni, o.port);
    let rows = o
        .members
        .iter()
        .map(|m| {
            let health = m.health.as_ref().map_or("not reported".into(), |h| {
                if h.ok {
                    format!(
                        "ok, {} peers, MTU {} ({})",
                        h.peers,
                        h.mtu,
                        ago(h.at_ms / 1000, now_s())
                    )
                } else {
                    format!("FAILING: {}", h.detail)
                }
            });
            vec![
                m.name.clone(),
                m.subnet.clone(),
                m.address.clone(),
                m.underlay.clone().unwrap_or_else(|| "-".into()),
                m.state.clone(),
                m.containers.to_string(),
                health,
            ]
        })
        .collect();
    table(
        &["NODE", "SUBNET", "ADDRESS", "UNDERLAY", "STATE", "CONTAINERS", "HEALTH"],
        rows,
    );
}

fn last_seen(n: &NodeView) -> String {
    n.last_heartbeat_ms
        .map_or_else(|| "never".into(), |ms| ago(ms / 1000, now_s()))
}

fn list(nodes: &[NodeView]) {
    if nodes.is_empty() {
        println!("no nodes yet; join one with `river token create` and `RIVER_JOIN_TOKEN=TOKEN river runner --join HOST:PORT`");
        return;
    }
    let rows = nodes
        .iter()
        .map(|n| {
            let usage = n.usage.as_ref();
            vec![
                n.name.clone(),
                if no_engine(n) {
                    format!("{} (no container engine)", n.state.as_str())
                } else {
                    n.state.as_str().to_owned()
                },
                n.info.cores.to_string(),
                bytes(n.info.memory_bytes),
                n.info.gpus.len().to_string(),
                n.info.numa.len().to_string(),
                usage.map_or("-".into(), |u| format!("{:.0}%", u.cpu_percent)),
                usage.map_or("-".into(), |u| bytes(u.memory_used_bytes)),
                last_seen(n),
                n.info.version.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "CORES",
            "MEMORY",
            "GPUS",
            "NUMA",
            "CPU",
            "MEM USED",
            "LAST SEEN",
            "VERSION",
        ],
        rows,
    );
}

/// Whether the node said, last, that no container engine answers there.
fn no_engine(n: &NodeView) -> bool {
    n.usage.as_ref().map_or(n.info.no_engine, |u| u.no_engine)
}

/// The last hour of a node's usage in a few lines: CPU and memory, then each GPU.
fn hour(samples: &[river_proto::msg::UsageSample]) -> Vec<String> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Vec::new();
    };
    let n = samples.len() as f32;
    let cpu_avg = samples.iter().map(|s| s.cpu_percent).sum::<f32>() / n;
    let cpu_max = samples.iter().map(|s| s.cpu_percent).fold(0.0, f32::max);
    let mem_max = samples.iter().map(|s| s.memory_used_bytes).max().unwrap_or(0);
    let minutes = (last.at_ms - first.at_ms) / 60_000;
    let mut out = vec![format!(
        "last hour:   cpu avg {cpu_avg:.1}%, max {cpu_max:.1}%; memory max {} ({} samples over {minutes} min)",
        bytes(mem_max),
        samples.len()
    )];
    let mut gpus: Vec<u32> = samples.iter().flat_map(|s| s.gpus.iter().map(|g| g.index)).collect();
    gpus.sort_unstable();
    gpus.dedup();
    for index in gpus {
        let of: Vec<_> = samples
            .iter()
            .flat_map(|s| s.gpus.iter().filter(|g| g.index == index))
            .collect();
        let avg = of.iter().map(|g| g.util_percent).sum::<u32>() / u32::try_from(of.len()).unwrap_or(1).max(1);
        let max = of.iter().map(|g| g.util_percent).max().unwrap_or(0);
        let mem = of.iter().map(|g| g.memory_used_bytes).max().unwrap_or(0);
        let temp = of
            .iter()
            .filter_map(|g| g.temperature_c)
            .max()
            .map_or(String::new(), |t| format!("; temperature max {t}°C"));
        out.push(format!(
            "gpu {index} hour:  util avg {avg}%, max {max}%; memory max {}{temp}",
            bytes(mem)
        ));
    }
    out
}

fn detail(n: &NodeView) {
    println!("name:        {}", n.name);
    println!("state:       {}", n.state.as_str());
    if no_engine(n) {
        println!("containers:  no container engine answers: --no-container tasks only, until one does");
    }
    println!("hostname:    {}", n.info.hostname);
    println!("address:     {}", n.address.as_deref().unwrap_or("-"));
    println!("version:     {}", n.info.version);
    println!("cores:       {}", n.info.cores);
    println!("memory:      {}", bytes(n.info.memory_bytes));
    println!("last seen:   {}", last_seen(n));
    println!("joined:      {}", ago(n.joined_at_ms / 1000, now_s()));
    println!("certificate: expires {}", ago(n.cert_expires_at_ms / 1000, now_s()));
    if let Some(u) = &n.usage {
        println!(
            "usage:       cpu {:.1}%, memory {}",
            u.cpu_percent,
            bytes(u.memory_used_bytes)
        );
    }
    for numa in &n.info.numa {
        println!(
            "numa {}:      cpus {}, memory {}",
            numa.id,
            cpus(&numa.cpus),
            bytes(numa.memory_bytes)
        );
    }
    for g in &n.info.gpus {
        let numa = g.numa.map_or(String::new(), |n| format!(", numa {n}"));
        println!(
            "gpu {}:       {} ({}{numa}) {}",
            g.index,
            g.name,
            bytes(g.memory_bytes),
            g.uuid
        );
    }
}

/// `[0,1,2,3,8]` → `0-3,8`.
fn cpus(list: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let start = list[i];
        let mut end = start;
        while i + 1 < list.len() && list[i + 1] == end + 1 {
            i += 1;
            end = list[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

pub async fn status(dir: &Path, output: Output) -> anyhow::Result<()> {
    let Response::Status(s) = once(dir, Request::Status).await? else {
        anyhow::bail!("unexpected answer")
    };
    show(output, &s, |s| {
        println!("river {}", s.version);
        println!("nodes:  {} online, {} offline", s.nodes_online, s.nodes_offline);
        println!(
            "online: {} cores, {} memory, {} GPUs",
            s.cores,
            bytes(s.memory_bytes),
            s.gpus
        );
        println!("tasks:  {} running, {} queued", s.tasks_active, s.tasks_queued);
        println!("CA:     sha256 {}", s.ca_fingerprint);
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ranges() {
        assert_eq!(super::cpus(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(super::cpus(&[]), "");
    }

    #[test]
    fn an_hour_of_usage_in_a_few_lines() {
        use river_proto::msg::{GpuUsage, UsageSample};
        let sample = |at_min: i64, cpu: f32, util: u32, temp: Option<u32>| UsageSample {
            at_ms: at_min * 60_000,
            cpu_percent: cpu,
            memory_used_bytes: (at_min as u64 + 1) << 30,
            gpus: vec![GpuUsage {
                index: 0,
                util_percent: util,
                memory_used_bytes: 2 << 30,
                temperature_c: temp,
            }],
        };
        assert!(super::hour(&[]).is_empty());
        let lines = super::hour(&[
            sample(0, 10.0, 20, Some(60)),
            sample(30, 30.0, 80, Some(71)),
            sample(59, 20.0, 50, None),
        ]);
        assert_eq!(
            lines,
            [
                "last hour:   cpu avg 20.0%, max 30.0%; memory max 60.0 GiB (3 samples over 59 min)",
                "gpu 0 hour:  util avg 50%, max 80%; memory max 2.0 GiB; temperature max 71°C",
            ]
        );
    }
}
