//! Packet filter rules a runner needs when its node filters forwarded traffic (Docker sets the
//! `FORWARD` policy to `DROP`): containers of peers may open connections to ours, and traffic
//! leaving the overlay is masqueraded while traffic inside it keeps its addresses. These go
//! through the `iptables` tool, checked before added, so re-running changes nothing; a node
//! without it filters nothing and needs none.

use crate::net::Ipv4Net;
use crate::plan::{BRIDGE_DEV, VXLAN_DEV};
use tokio::process::Command;

/// The rules for a runner whose subnet is `subnet` inside `range`, VXLAN on UDP `port`, as
/// `(table, chain, rule)`. Traffic inside the overlay, and the VXLAN packets that carry it, skip
/// connection tracking: nothing about them is stateful, and tracking every packet twice (inner
/// and outer) costs a large part of the forwarding budget.
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
        ("raw", "PREROUTING", vxlan()),
        ("raw", "OUTPUT", vxlan()),
        (
            "filter",
            "FORWARD",
            vec![s("-i"), s(VXLAN_DEV), s("-o"), s(BRIDGE_DEV), s("-j"), s("ACCEPT")],
        ),
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

#[derive(Debug, thiserror::Error)]
#[error("iptables -t {table} -I {chain} {rule}: {why}")]
pub struct FirewallError {
    table: String,
    chain: String,
    rule: String,
    why: String,
}

/// Adds whichever of [`rules`] are missing. Without `iptables` on the node: nothing to do.
pub async fn ensure(subnet: &Ipv4Net, range: &Ipv4Net, port: u16) -> Result<(), FirewallError> {
    for (table, chain, rule) in rules(subnet, range, port) {
        let run = |op: &str| {
            let mut c = Command::new("iptables");
            c.args(["-w", "-t", table, op, chain]).args(&rule);
            c
        };
        match run("-C").output().await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Ok(o) if o.status.success() => continue,
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
    }
    Ok(())
}
