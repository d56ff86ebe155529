//! Plan, then apply: what a member's overlay devices and forwarding entries should be
//! ([`desired`]), what they are ([`Observed`], read by the netlink side), and the smallest list of
//! changes between the two ([`diff`]). Pure, so the reconciler's decisions are unit-tested here
//! and re-running it on a correct node changes nothing.

use crate::net::{gateway, vtep_mac, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The VXLAN device every member has.
pub const VXLAN_DEV: &str = "rvx0";
/// The bridge a runner's containers attach to (the Docker network sits on it).
pub const BRIDGE_DEV: &str = "river0";
/// Bytes VXLAN adds to each packet over IPv4: outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// One member of the overlay: the host or a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub subnet: Ipv4Net,
    /// Where its VXLAN packets go: the address the host sees it connect from.
    pub underlay: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Holds its gateway address on the VXLAN device itself; no containers.
    Host,
    /// Holds its gateway on a bridge its containers attach to, and forwards between the two.
    Runner,
}

/// Everything a member needs to build its part of the overlay. The host sends one to each runner
/// whenever membership changes; the runner keeps the last one and reconciles against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub vni: u32,
    pub port: u16,
    /// The whole overlay range (every member's subnet lies in it).
    pub range: Ipv4Net,
    /// MTU inside the overlay; `None`: the member's underlay MTU less [`VXLAN_OVERHEAD`].
    pub mtu: Option<u32>,
    pub role: Role,
    pub me: Member,
    pub peers: Vec<Member>,
    /// Runners: the overlay's reach sets — the addresses of each owner's containers, which may
    /// reach each other and nothing else of the overlay's containers (the `reach` module).
    #[serde(default)]
    pub reach: Vec<Vec<Ipv4Addr>>,
}

pub type Mac = [u8; 6];

/// Forwarding entries on the VXLAN device, one of each per peer: the peer's VTEP MAC lives
/// behind its underlay address (FDB), the peer's gateway has that MAC (neighbour), and the
/// peer's subnet is reached through its gateway (route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    pub fdb: BTreeSet<(Mac, Ipv4Addr)>,
    pub neighbours: BTreeSet<(Ipv4Addr, Mac)>,
    pub routes: BTreeSet<(Ipv4Net, Ipv4Addr)>,
}

/// A link as it should be, or as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// VXLAN only: VNI, UDP port, local underlay address.
    pub vxlan: Option<(u32, u16, Option<Ipv4Addr>)>,
    pub addresses: BTreeSet<(Ipv4Addr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub vxlan: Link,
    pub bridge: Option<Link>,
    pub entries: Entries,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub vxlan: Option<Link>,
    pub bridge: Option<Link>,
    pub entries: Entries,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dev {
    Vxlan,
    Bridge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create the device as desired (deleting it first if it exists with settings that cannot
    /// be changed in place: VNI, port, local address).
    Create(Dev, Option<String>),
    SetMtu(Dev, u32),
    SetMac(Dev, Mac),
    Up(Dev),
    AddAddress(Dev, Ipv4Addr, u8),
    AddFdb(Mac, Ipv4Addr),
    DelFdb(Mac, Ipv4Addr),
    AddNeighbour(Ipv4Addr, Mac),
    DelNeighbour(Ipv4Addr, Mac),
    AddRoute(Ipv4Net, Ipv4Addr),
    DelRoute(Ipv4Net, Ipv4Addr),
}

/// What `plan` asks of this member, with `mtu` resolved.
pub fn desired(plan: &Plan, mtu: u32) -> Desired {
    let mut entries = Entries::default();
    for p in plan.peers.iter().filter(|p| p.name != plan.me.name) {
        let mac = vtep_mac(&p.subnet);
        let gw = gateway(&p.subnet);
        entries.fdb.insert((mac, p.underlay));
        entries.neighbours.insert((gw, mac));
        entries.routes.insert((p.subnet, gw));
    }
    let me = gateway(&plan.me.subnet);
    let (vxlan_addresses, bridge) = match plan.role {
        Role::Host => (BTreeSet::from([(me, 32)]), None),
        Role::Runner => (
            BTreeSet::new(),
            Some(Link {
                up: true,
                mtu,
                mac: None,
                vxlan: None,
                addresses: BTreeSet::from([(me, plan.me.subnet.prefix())]),
            }),
        ),
    };
    Desired {
        vxlan: Link {
            up: true,
            mtu,
            mac: Some(vtep_mac(&plan.me.subnet)),
            vxlan: Some((plan.vni, plan.port, Some(plan.me.underlay))),
            addresses: vxlan_addresses,
        },
        bridge,
        entries,
    }
}

fn link_changes(dev: Dev, want: &Link, have: Option<&Link>, out: &mut Vec<Change>) {
    let created = |why: Option<String>, out: &mut Vec<Change>| {
        out.push(Change::Create(dev, why));
        out.extend(
            want.addresses
                .iter()
                .map(|(ip, prefix)| Change::AddAddress(dev, *ip, *prefix)),
        );
    };
    let have = match have {
        None => return created(None, out),
        Some(h) if h.vxlan != want.vxlan => {
            let why = format!("VXLAN settings changed: {:?} → {:?}", h.vxlan, want.vxlan);
            return created(Some(why), out);
        }
        Some(h) => h,
    };
    if have.mtu != want.mtu {
        out.push(Change::SetMtu(dev, want.mtu));
    }
    if let Some(mac) = want.mac.filter(|m| have.mac != Some(*m)) {
        out.push(Change::SetMac(dev, mac));
    }
    for (ip, prefix) in want.addresses.difference(&have.addresses) {
        out.push(Change::AddAddress(dev, *ip, *prefix));
    }
    if !have.up {
        out.push(Change::Up(dev));
    }
}

/// The changes that turn `have` into `want`, links first (entries need the VXLAN device), in a
/// stable order. Empty when nothing differs.
pub fn diff(want: &Desired, have: &Observed) -> Vec<Change> {
    let mut out = Vec::new();
    if let Some(bridge) = &want.bridge {
        link_changes(Dev::Bridge, bridge, have.bridge.as_ref(), &mut out);
    }
    link_changes(Dev::Vxlan, &want.vxlan, have.vxlan.as_ref(), &mut out);
    // A recreated device starts with no entries: add them all.
    let recreated = out.iter().any(|c| matches!(c, Change::Create(Dev::Vxlan, _)));
    let empty = Entries::default();
    let have = if recreated { &empty } else { &have.entries };
    let want = &want.entries;
    out.extend(
        have.routes
            .difference(&want.routes)
            .map(|(n, g)| Change::DelRoute(*n, *g)),
    );
    out.extend(
        have.neighbours
            .difference(&want.neighbours)
            .map(|(i, m)| Change::DelNeighbour(*i, *m)),
    );
    out.extend(have.fdb.difference(&want.fdb).map(|(m, i)| Change::DelFdb(*m, *i)));
    out.extend(want.fdb.difference(&have.fdb).map(|(m, i)| Change::AddFdb(*m, *i)));
    out.extend(
        want.neighbours
            .difference(&have.neighbours)
            .map(|(i, m)| Change::AddNeighbour(*i, *m)),
    );
    out.extend(
        want.routes
            .difference(&have.routes)
            .map(|(n, g)| Change::AddRoute(*n, *g)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, idx: u8, underlay: u8) -> Member {
        Member {
            name: name.into(),
            subnet: format!("10.128.{idx}.0/24").parse().unwrap(),
            underlay: Ipv4Addr::new(192, 168, 0, underlay),
        }
    }

    fn plan(role: Role, me: Member, peers: Vec<Member>) -> Plan {
        Plan {
            vni: 4242,
            port: 4789,
            range: "10.128.0.0/12".parse().unwrap(),
            mtu: None,
            role,
            me,
            peers,
            reach: Vec::new(),
        }
    }

    /// What a node looks like after `want` was applied to it.
    fn applied(want: &Desired) -> Observed {
        Observed {
            vxlan: Some(want.vxlan.clone()),
            bridge: want.bridge.clone(),
            entries: want.entries.clone(),
        }
    }

    #[test]
    fn a_fresh_runner_gets_devices_then_one_entry_of_each_kind_per_peer() {
        let p = plan(
            Role::Runner,
            member("a", 1, 11),
            vec![member("host", 0, 1), member("a", 1, 11), member("b", 2, 12)],
        );
        let want = desired(&p, 1450);
        let changes = diff(&want, &Observed::default());
        assert_eq!(changes[0], Change::Create(Dev::Bridge, None));
        assert_eq!(
            changes[1],
            Change::AddAddress(Dev::Bridge, Ipv4Addr::new(10, 128, 1, 1), 24)
        );
        assert_eq!(changes[2], Change::Create(Dev::Vxlan, None));
        // Itself is not a peer: two peers, three entries each.
        assert_eq!(changes.len(), 3 + 6);
        assert!(changes.contains(&Change::AddRoute(
            "10.128.2.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 128, 2, 1)
        )));
        assert!(changes.contains(&Change::AddFdb(
            [2, 0x72, 10, 128, 2, 0],
            Ipv4Addr::new(192, 168, 0, 12)
        )));
        assert_eq!(
            want.bridge.unwrap().addresses,
            BTreeSet::from([(Ipv4Addr::new(10, 128, 1, 1), 24)])
        );
    }

    #[test]
    fn reapplying_to_a_correct_node_changes_nothing() {
        let p = plan(
            Role::Host,
            member("host", 0, 1),
            vec![member("a", 1, 11), member("b", 2, 12)],
        );
        let want = desired(&p, 1450);
        assert!(diff(&want, &applied(&want)).is_empty());
    }

    #[test]
    fn a_peer_leaving_removes_only_its_entries() {
        let before = desired(
            &plan(
                Role::Runner,
                member("a", 1, 11),
                vec![member("b", 2, 12), member("c", 3, 13)],
            ),
            1450,
        );
        let after = desired(&plan(Role::Runner, member("a", 1, 11), vec![member("b", 2, 12)]), 1450);
        let changes = diff(&after, &applied(&before));
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes
            .iter()
            .all(|c| matches!(c, Change::DelRoute(..) | Change::DelNeighbour(..) | Change::DelFdb(..))));
        assert!(changes.contains(&Change::DelFdb(
            [2, 0x72, 10, 128, 3, 0],
            Ipv4Addr::new(192, 168, 0, 13)
        )));
    }

    #[test]
    fn a_peer_moving_replaces_its_fdb_entry() {
        let before = desired(&plan(Role::Runner, member("a", 1, 11), vec![member("b", 2, 12)]), 1450);
        let after = desired(&plan(Role::Runner, member("a", 1, 11), vec![member("b", 2, 99)]), 1450);
        let changes = diff(&after, &applied(&before));
        let mac = [2, 0x72, 10, 128, 2, 0];
        assert_eq!(
            changes,
            vec![
                Change::DelFdb(mac, Ipv4Addr::new(192, 168, 0, 12)),
                Change::AddFdb(mac, Ipv4Addr::new(192, 168, 0, 99)),
            ]
        );
    }

    #[test]
    fn drift_is_repaired_in_place_but_a_new_vni_recreates_the_device() {
        let p = plan(Role::Runner, member("a", 1, 11), vec![member("b", 2, 12)]);
        let want = desired(&p, 1450);
        let mut have = applied(&want);
        have.vxlan.as_mut().unwrap().up = false;
        have.vxlan.as_mut().unwrap().mtu = 1500;
        have.entries.routes.clear();
        let changes = diff(&want, &have);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes.contains(&Change::Up(Dev::Vxlan)));
        assert!(changes.contains(&Change::SetMtu(Dev::Vxlan, 1450)));

        let mut other = p.clone();
        other.vni = 7;
        let changes = diff(&desired(&other, 1450), &applied(&want));
        assert!(matches!(changes[0], Change::Create(Dev::Vxlan, Some(_))));
        // Entries of the old device are gone with it: all are added again.
        assert_eq!(changes.len(), 4);
    }
}
