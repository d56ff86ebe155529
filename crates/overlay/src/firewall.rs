//! Packet filter rules: on every member, VXLAN packets are let in only from the other members'
//! addresses; on runners, whose node may filter forwarded traffic (Docker sets the `FORWARD`
//! policy to `DROP`), containers of peers may open connections to ours, and traffic leaving the
//! overlay is masqueraded while traffic inside it keeps its addresses. These go
//! through the `iptables` tool, checked before added, so re-running changes nothing; a node
//! without it filters nothing and needs none.

use crate::net::Ipv4Net;
use crate::plan::{BRIDGE_DEV, VXLAN_DEV};
use std::net::Ipv4Addr;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// The rules for a runner whose subnet is `subnet` inside `range`, VXLAN on UDP `port`, as
/// `(table, chain, rule)`. Traffic inside the overlay, and the VXLAN packets that carry it, skip
/// connection tracking: nothing about them is stateful, and tracking every packet twice (inner
/// and outer) costs a large part of the forwarding budget. What goes out of the bridge into the
/// VXLAN device is let through here; what comes into the bridge is the `reach` module's to decide.
pub fn rules(subnet: &Ipv4Net, range: &Ipv4Net, port: u16) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let s = |x: &str| x.to_owned();
    let vxlan = || vec![s("-p"), s("udp"), s("--dport"), port.to_string(), s("-j"), s("NOTRACK")];
    vec![
        (
            "raw",
            "PREROUTING",
            vec![
                s("-s"),
                range.to_string(),
                s("-d"),
                range.to_string(),
                s("-j"),
                s("NOTRACK"),
            ],
        ),
        ("raw", "OUTPUT", vxlan()),
        (
            "filter",
            "FORWARD",
            vec![s("-i"), s(BRIDGE_DEV), s("-o"), s(VXLAN_DEV), s("-j"), s("ACCEPT")],
        ),
        (
            "nat",
            "POSTROUTING",
            vec![
                s("-s"),
                subnet.to_string(),
                s("!"),
                s("-d"),
                range.to_string(),
                s("!"),
                s("-o"),
                s(BRIDGE_DEV),
                s("-j"),
                s("MASQUERADE"),
            ],
        ),
    ]
}

/// The chain that VXLAN packets arriving at this member go through.
pub const VXLAN_CHAIN: &str = "RIVER-VXLAN";

/// The rules of [`VXLAN_CHAIN`], as `iptables -S` prints them: VXLAN packets are not tracked,
/// and only those from the members' own addresses are let in. VXLAN itself authenticates nothing,
/// so without this anyone able to send UDP to the port could put packets into the overlay.
pub fn vxlan_chain(peers: &[Ipv4Addr]) -> Vec<String> {
    let mut rules = vec![format!("-A {VXLAN_CHAIN} -j NOTRACK")];
    rules.extend(peers.iter().map(|p| format!("-A {VXLAN_CHAIN} -s {p}/32 -j RETURN")));
    rules.push(format!("-A {VXLAN_CHAIN} -j DROP"));
    rules
}

/// Makes [`VXLAN_CHAIN`] hold exactly [`vxlan_chain`]`(peers)` (replaced in one
/// `iptables-restore` when it differs, so it is never briefly open) and VXLAN packets go
/// through it. Without `iptables` on the node: nothing to do.
pub async fn ensure_vxlan_filter(port: u16, peers: &[Ipv4Addr]) -> Result<(), FirewallError> {
    let fail = |why: String| FirewallError {
        table: "raw".into(),
        chain: VXLAN_CHAIN.into(),
        rule: "(the peers' addresses)".into(),
        why,
    };
    let listed = Command::new("iptables")
        .args(["-w", "-t", "raw", "-S", VXLAN_CHAIN])
        .output()
        .await;
    let have: Vec<String> = match listed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e.to_string())),
        // Absent chains list nothing (and fail): the restore below creates it.
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_owned)
            .collect(),
    };
    let want = vxlan_chain(peers);
    if have != want {
        let input = format!("*raw\n:{VXLAN_CHAIN} - [0:0]\n{}\nCOMMIT\n", want.join("\n"));
        restore(&input).await.map_err(fail)?;
    }
    let jump = vec![
        "-p".to_owned(),
        "udp".into(),
        "--dport".into(),
        port.to_string(),
        "-j".into(),
        VXLAN_CHAIN.into(),
    ];
    ensure_rule("raw", "PREROUTING", &jump).await
}

/// Feeds `input` to `iptables-restore --noflush`: the tables it names change in one
/// transaction, or not at all.
pub(crate) async fn restore(input: &str) -> Result<(), String> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("iptables -t {table} -I {chain} {rule}: {why}")]
pub struct FirewallError {
    table: String,
    chain: String,
    rule: String,
    why: String,
}

impl FirewallError {
    pub(crate) fn new(table: &str, chain: &str, rule: &str, why: String) -> Self {
        Self {
            table: table.into(),
            chain: chain.into(),
            rule: rule.into(),
            why,
        }
    }
}

/// Adds whichever of [`rules`] are missing. Without `iptables` on the node: nothing to do.
pub async fn ensure(subnet: &Ipv4Net, range: &Ipv4Net, port: u16) -> Result<(), FirewallError> {
    for (table, chain, rule) in rules(subnet, range, port) {
        ensure_rule(table, chain, &rule).await?;
    }
    // Earlier versions let everything from the VXLAN device into the bridge.
    let legacy = ["-i", VXLAN_DEV, "-o", BRIDGE_DEV, "-j", "ACCEPT"].map(str::to_owned);
    let _ = Command::new("iptables")
        .args(["-w", "-t", "filter", "-D", "FORWARD"])
        .args(legacy)
        .output()
        .await;
    Ok(())
}

/// Inserts `rule` at the top of `chain` unless it is there already.
pub(crate) async fn ensure_rule(table: &str, chain: &str, rule: &[String]) -> Result<(), FirewallError> {
    let run = |op: &str| {
        let mut c = Command::new("iptables");
        c.args(["-w", "-t", table, op, chain]).args(rule);
        c
    };
    match run("-C").output().await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Ok(o) if o.status.success() => return Ok(()),
        _ => {}
    }
    let fail = |why: String| FirewallError {
        table: table.into(),
        chain: chain.into(),
        rule: rule.join(" "),
        why,
    };
    let out = run("-I").output().await.map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}
