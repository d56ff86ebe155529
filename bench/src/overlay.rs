//! How the overlay's reconcile scales with the number of peers, in a fresh network namespace:
//! river building a node's overlay from nothing, re-running with nothing to do, and one peer
//! leaving; against the same devices and entries made by hand with `ip -batch` and
//! `bridge -batch` (the baseline) in the same run.

use river_overlay::plan::{Member, Plan, Role};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn member(i: usize) -> Member {
    let idx = u32::try_from(i).unwrap_or(u32::MAX);
    Member {
        name: format!("n{i}"),
        subnet: "10.128.0.0/12"
            .parse::<river_overlay::Ipv4Net>()
            .unwrap()
            .subnet(24, u64::from(idx))
            .unwrap(),
        underlay: Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + idx),
    }
}

fn plan(peers: usize) -> Plan {
    Plan {
        vni: 4242,
        port: 4789,
        range: "10.128.0.0/12".parse().unwrap(),
        mtu: None,
        role: Role::Runner,
        me: member(1),
        peers: (2..peers + 2).map(member).collect(),
        reach: Vec::new(),
    }
}

fn sh(args: &[&str], input: Option<&str>) -> anyhow::Result<()> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "{args:?} failed");
    Ok(())
}

struct Row {
    first: Duration,
    again: Duration,
    leave: Duration,
    by_hand: Duration,
}

/// Runs in the calling thread's own new network namespace.
fn one(peers: usize) -> anyhow::Result<Row> {
    #[allow(unsafe_code)]
    // SAFETY: unshare changes only this thread's namespaces; no memory is involved.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    anyhow::ensure!(rc == 0, "cannot unshare a network namespace: run as root");
    sh(&["ip", "link", "set", "lo", "up"], None)?;
    sh(&["ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1"], None)?;
    sh(&["ip", "addr", "add", "192.168.0.1/16", "dev", "u0"], None)?;
    sh(&["ip", "link", "set", "u0", "up"], None)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let full = plan(peers);
    let mut fewer = full.clone();
    fewer.peers.pop();
    let (first, again, leave) = rt.block_on(async {
        let t = Instant::now();
        river_overlay::reconcile(&full).await?;
        let first = t.elapsed();
        let t = Instant::now();
        let out = river_overlay::reconcile(&full).await?;
        let again = t.elapsed();
        anyhow::ensure!(out.changes.is_empty(), "a re-run changed something");
        let t = Instant::now();
        river_overlay::reconcile(&fewer).await?;
        let leave = t.elapsed();
        river_overlay::remove().await?;
        Ok::<_, anyhow::Error>((first, again, leave))
    })?;
    // The same by hand: devices, then every entry in one batch per tool.
    let t = Instant::now();
    let me = &full.me;
    let gw = river_overlay::net::gateway(&me.subnet);
    let mut ip = format!(
        "link add rvx0 type vxlan id 4242 dstport 4789 local {} nolearning\nlink set rvx0 mtu 1450 up\n\
         link add river0 type bridge\naddr add {gw}/24 dev river0\nlink set river0 up\n",
        me.underlay
    );
    let mut bridge = String::new();
    for p in &full.peers {
        let mac = river_overlay::net::vtep_mac(&p.subnet);
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let pgw = river_overlay::net::gateway(&p.subnet);
        ip.push_str(&format!("neigh add {pgw} lladdr {mac} dev rvx0 nud permanent\n"));
        ip.push_str(&format!("route add {} via {pgw} dev rvx0 onlink\n", p.subnet));
        bridge.push_str(&format!("fdb append {mac} dev rvx0 dst {}\n", p.underlay));
    }
    // Devices and neighbours first: routes need nothing else, FDB entries need the device.
    sh(&["ip", "-batch", "-"], Some(&ip))?;
    sh(&["bridge", "-batch", "-"], Some(&bridge))?;
    let by_hand = t.elapsed();
    Ok(Row {
        first,
        again,
        leave,
        by_hand,
    })
}

pub fn scale(peers: &[usize]) -> anyhow::Result<()> {
    println!("overlay reconcile, one node, entries for N peers (3 per peer), fresh namespace each");
    println!(
        "{:>6}  {:>18}  {:>22}  {:>16}  {:>26}",
        "peers", "river: from nothing", "river: nothing to do", "river: one leaves", "by hand: ip/bridge -batch"
    );
    for &n in peers {
        let row = std::thread::spawn(move || one(n))
            .join()
            .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))??;
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:>6}  {:>18}  {:>22}  {:>16}  {:>26}",
            n,
            ms(row.first),
            ms(row.again),
            ms(row.leave),
            ms(row.by_hand)
        );
    }
    Ok(())
}
