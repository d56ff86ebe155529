//! Who may reach whom on the overlay: containers reach only containers of the same owner (a
//! distributed group's members share theirs), and the members' own gateway addresses.
//!
//! The host sends every runner the overlay's *reach sets* — for each owner, the addresses of
//! their containers that have not ended, anywhere in the cluster — and each runner filters what
//! goes *into* its bridge (from its own containers and from the VXLAN device alike): a packet
//! from an overlay address to a container here passes only if its source is in the destination's
//! set. The filter is at the destination, so every runner guards its own containers whatever the
//! others do; it is stateless (traffic inside the overlay is not connection-tracked, see
//! [`crate::firewall`]), which works because the rule is symmetric: replies pass where requests
//! did.
//!
//! Source addresses can be trusted because containers cannot forge them: river's containers run
//! without `CAP_NET_RAW` or `CAP_NET_ADMIN` (no raw or packet sockets, no address changes), and
//! bridged traffic between containers on one node goes through the packet filter
//! (`bridge-nf-call-iptables`). An address that is in no set — a container that has just been
//! placed and whose set has not arrived, or something that is not river's — gets nothing from
//! the overlay: the filter fails closed.

use crate::firewall::{ensure_rule, restore, FirewallError};
use crate::net::gateway;
use crate::plan::{Plan, BRIDGE_DEV};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use tokio::process::Command;

/// The chain that everything forwarded into the bridge goes through.
pub const CHAIN: &str = "RIVER-OVERLAY";
/// Chains of one reach set each: `RIVER-REACH-0`, `RIVER-REACH-1`, ….
pub const SET_PREFIX: &str = "RIVER-REACH-";

/// The filter table's chains as they must be, as `iptables -S` prints their rules: [`CHAIN`]
/// first, then one chain per reach set that holds an address of this node's subnet.
pub fn chains(plan: &Plan) -> Vec<(String, Vec<String>)> {
    let range = plan.range.to_string();
    let mut main = vec![format!("-A {CHAIN} ! -s {range} -j RETURN")];
    let gateways: BTreeSet<Ipv4Addr> = std::iter::once(&plan.me)
        .chain(&plan.peers)
        .map(|m| gateway(&m.subnet))
        .collect();
    main.extend(gateways.iter().map(|g| format!("-A {CHAIN} -s {g}/32 -j ACCEPT")));
    let mut sets = Vec::new();
    for set in &plan.reach {
        let here: BTreeSet<Ipv4Addr> = set.iter().copied().filter(|a| plan.me.subnet.contains(*a)).collect();
        if here.is_empty() {
            continue;
        }
        let name = format!("{SET_PREFIX}{}", sets.len());
        main.extend(here.iter().map(|d| format!("-A {CHAIN} -d {d}/32 -j {name}")));
        let members: BTreeSet<Ipv4Addr> = set.iter().copied().collect();
        let mut rules: Vec<String> = members
            .iter()
            .map(|s| format!("-A {name} -s {s}/32 -j ACCEPT"))
            .collect();
        rules.push(format!("-A {name} -j DROP"));
        sets.push((name, rules));
    }
    main.push(format!("-A {CHAIN} -j DROP"));
    std::iter::once((CHAIN.to_owned(), main)).chain(sets).collect()
}

/// The `iptables-restore --noflush` input that turns the chains in `have` (name → rules) into
/// `want`: every chain of either is declared (which empties it), `want`'s rules are added, and
/// chains that are no longer wanted are deleted — all in one transaction, so the filter is never
/// briefly open.
pub fn restore_input(have: &[(String, Vec<String>)], want: &[(String, Vec<String>)]) -> String {
    let mut out = String::from("*filter\n");
    let names: BTreeSet<&str> = have.iter().chain(want).map(|(n, _)| n.as_str()).collect();
    for n in &names {
        out.push_str(&format!(":{n} - [0:0]\n"));
    }
    for (_, rules) in want {
        for r in rules {
            out.push_str(r);
            out.push('\n');
        }
    }
    for n in names.iter().filter(|n| !want.iter().any(|(w, _)| w == *n)) {
        out.push_str(&format!("-X {n}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Parses `iptables -t filter -S` into river's reach chains and their rules.
pub fn parse_listing(listing: &str) -> Vec<(String, Vec<String>)> {
    let ours = |n: &str| n == CHAIN || n.starts_with(SET_PREFIX);
    let mut chains: Vec<(String, Vec<String>)> = Vec::new();
    for line in listing.lines() {
        if let Some(n) = line.strip_prefix("-N ").filter(|n| ours(n)) {
            chains.push((n.to_owned(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if let Some((_, rules)) = chains.iter_mut().find(|(n, _)| n == name) {
                rules.push(line.to_owned());
            }
        }
    }
    chains
}

/// The rule that sends what is forwarded into the bridge through [`CHAIN`].
fn jump() -> Vec<String> {
    ["-o", BRIDGE_DEV, "-j", CHAIN].map(str::to_owned).to_vec()
}

/// Makes this node's filter hold [`chains`]`(plan)` and everything forwarded into the bridge go
/// through it — from `DOCKER-USER` where the engine made one (the engine keeps that chain first
/// and leaves its rules alone), else from `FORWARD`, ahead of every other rule for the bridge.
/// Without `iptables` on the node: nothing to do.
pub async fn ensure(plan: &Plan) -> Result<(), FirewallError> {
    let fail = |why: String| FirewallError::new("filter", CHAIN, "(the reach sets)", why);
    let listed = match Command::new("iptables")
        .args(["-w", "-t", "filter", "-S"])
        .output()
        .await
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e.to_string())),
        Ok(o) if !o.status.success() => return Err(fail(String::from_utf8_lossy(&o.stderr).trim().to_owned())),
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
    };
    let have = parse_listing(&listed);
    let want = chains(plan);
    if have != want {
        restore(&restore_input(&have, &want)).await.map_err(fail)?;
    }
    let from = if listed.lines().any(|l| l == "-N DOCKER-USER") {
        "DOCKER-USER"
    } else {
        "FORWARD"
    };
    let rule = jump();
    let spelled = format!("-A {from} {}", rule.join(" "));
    let bridge_rules: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with(&format!("-A {from} ")) && l.contains(&format!("-o {BRIDGE_DEV} ")))
        .collect();
    if bridge_rules.first() != Some(&spelled.as_str()) && bridge_rules.contains(&spelled.as_str()) {
        // Another rule for the bridge came first (the engine, restarted, put its own on top):
        // ours goes back to the top.
        let out = Command::new("iptables")
            .args(["-w", "-t", "filter", "-D", from])
            .args(&rule)
            .output()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
    }
    ensure_rule("filter", from, &rule).await
}

/// Bridged traffic between containers on one node must pass the packet filter, or nothing here
/// applies to it: turns `net.bridge.bridge-nf-call-iptables` on (loading `br_netfilter` first
/// where it is a module).
pub async fn ensure_bridge_filtering() -> Result<(), FirewallError> {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let fail = |why: String| {
        FirewallError::new(
            "-",
            "-",
            "net.bridge.bridge-nf-call-iptables = 1",
            format!("containers on one node could reach each other unfiltered: {why}"),
        )
    };
    if !std::path::Path::new(path).exists() {
        let _ = Command::new("modprobe").arg("br_netfilter").output().await;
    }
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(path, "1").map_err(|e| fail(e.to_string())),
        Err(e) => Err(fail(format!("{path}: {e} (is the br_netfilter module available?)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Member, Role};

    fn member(name: &str, idx: u8) -> Member {
        Member {
            name: name.into(),
            subnet: format!("10.128.{idx}.0/24").parse().unwrap(),
            underlay: Ipv4Addr::new(192, 168, 0, idx),
        }
    }

    fn plan(reach: Vec<Vec<Ipv4Addr>>) -> Plan {
        Plan {
            vni: 1,
            port: 4789,
            range: "10.128.0.0/16".parse().unwrap(),
            mtu: None,
            role: Role::Runner,
            me: member("a", 1),
            peers: vec![member("host", 0), member("b", 2)],
            reach,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn each_container_here_takes_only_its_owners_addresses() {
        let alice = vec![ip("10.128.1.2"), ip("10.128.2.2"), ip("10.128.1.3")];
        let mallory = vec![ip("10.128.1.4"), ip("10.128.2.3")];
        let elsewhere = vec![ip("10.128.2.9")];
        let got = chains(&plan(vec![alice, elsewhere, mallory]));
        let want = vec![
            (
                CHAIN.to_owned(),
                vec![
                    "-A RIVER-OVERLAY ! -s 10.128.0.0/16 -j RETURN",
                    "-A RIVER-OVERLAY -s 10.128.0.1/32 -j ACCEPT",
                    "-A RIVER-OVERLAY -s 10.128.1.1/32 -j ACCEPT",
                    "-A RIVER-OVERLAY -s 10.128.2.1/32 -j ACCEPT",
                    "-A RIVER-OVERLAY -d 10.128.1.2/32 -j RIVER-REACH-0",
                    "-A RIVER-OVERLAY -d 10.128.1.3/32 -j RIVER-REACH-0",
                    "-A RIVER-OVERLAY -d 10.128.1.4/32 -j RIVER-REACH-1",
                    "-A RIVER-OVERLAY -j DROP",
                ],
            ),
            (
                "RIVER-REACH-0".to_owned(),
                vec![
                    "-A RIVER-REACH-0 -s 10.128.1.2/32 -j ACCEPT",
                    "-A RIVER-REACH-0 -s 10.128.1.3/32 -j ACCEPT",
                    "-A RIVER-REACH-0 -s 10.128.2.2/32 -j ACCEPT",
                    "-A RIVER-REACH-0 -j DROP",
                ],
            ),
            (
                "RIVER-REACH-1".to_owned(),
                vec![
                    "-A RIVER-REACH-1 -s 10.128.1.4/32 -j ACCEPT",
                    "-A RIVER-REACH-1 -s 10.128.2.3/32 -j ACCEPT",
                    "-A RIVER-REACH-1 -j DROP",
                ],
            ),
        ];
        let want: Vec<(String, Vec<String>)> = want
            .into_iter()
            .map(|(n, r)| (n, r.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn with_no_sets_nothing_from_the_overlay_reaches_a_container() {
        let got = chains(&plan(vec![]));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.last().unwrap(), "-A RIVER-OVERLAY -j DROP");
        assert!(!got[0].1.iter().any(|r| r.contains("-d ")));
    }

    #[test]
    fn a_listing_reads_back_as_what_was_written_and_stale_chains_go() {
        let want = chains(&plan(vec![vec![ip("10.128.1.2")]]));
        let mut listing = String::from("-P FORWARD DROP\n-N DOCKER-USER\n-N RIVER-OVERLAY\n-N RIVER-REACH-0\n-N RIVER-REACH-1\n-A DOCKER-USER -j RETURN\n");
        for (_, rules) in &want {
            for r in rules {
                listing.push_str(r);
                listing.push('\n');
            }
        }
        listing.push_str("-A RIVER-REACH-1 -j DROP\n");
        let have = parse_listing(&listing);
        assert_eq!(have.len(), 3);
        assert_eq!(&have[..2], &want[..]);
        let input = restore_input(&have, &want);
        assert!(input.starts_with("*filter\n:RIVER-OVERLAY - [0:0]\n:RIVER-REACH-0 - [0:0]\n:RIVER-REACH-1 - [0:0]\n"));
        assert!(input.ends_with("-X RIVER-REACH-1\nCOMMIT\n"), "{input}");
        assert!(!input.contains("DOCKER-USER"));
    }
}
