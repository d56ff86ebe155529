//! The reconciler against the real kernel: each test runs in a network namespace of its own
//! (unshared on a fresh thread), builds the overlay from nothing, and checks that running it
//! again changes nothing and that a departed peer's entries go. Needs root; says so otherwise.

use river_overlay::plan::{self, Change, Member, Plan, Role};
use river_overlay::{reconcile, Netlink};
use std::net::Ipv4Addr;

fn member(name: &str, idx: u8, underlay: u8) -> Member {
    Member {
        name: name.into(),
        subnet: format!("10.128.{idx}.0/24").parse().unwrap(),
        underlay: Ipv4Addr::new(192, 168, 77, underlay),
    }
}

/// Runs `f` on a thread in a new, empty network namespace, with a runtime of its own.
fn in_new_netns<F, Fut>(f: F) -> bool
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        #[allow(unsafe_code)]
        // SAFETY: unshare only changes this thread's namespace; no memory is involved.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        if rc != 0 {
            eprintln!("SKIP: cannot unshare a network namespace (needs root)");
            return false;
        }
        // A fresh namespace's loopback is down, and the kernel then refuses on-link gateways.
        let lo = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(lo.is_ok_and(|s| s.success()), "ip link set lo up");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f());
        true
    })
    .join()
    .expect("test thread panicked")
}

fn plan_with(peers: Vec<Member>) -> Plan {
    Plan {
        vni: 4242,
        port: 4789,
        range: "10.128.0.0/12".parse().unwrap(),
        mtu: Some(1400),
        role: Role::Runner,
        me: member("a", 1, 11),
        peers,
        reach: Vec::new(),
    }
}

#[test]
fn builds_from_nothing_then_changes_only_what_differs() {
    in_new_netns(|| async {
        let full = plan_with(vec![member("host", 0, 1), member("b", 2, 12), member("c", 3, 13)]);
        let first = reconcile(&full).await.expect("first reconcile");
        assert!(first.changes.contains(&Change::Create(plan::Dev::Vxlan, None)));
        assert_eq!(first.mtu, 1400);

        // What the kernel now holds is exactly the plan.
        let mut nl = Netlink::open().unwrap();
        let seen = nl.observe(true).await.unwrap();
        let want = plan::desired(&full, 1400);
        assert_eq!(seen.entries, want.entries);
        assert_eq!(
            seen.vxlan.as_ref().unwrap().vxlan,
            Some((4242, 4789, Some(Ipv4Addr::new(192, 168, 77, 11))))
        );
        assert!(seen
            .bridge
            .as_ref()
            .unwrap()
            .addresses
            .contains(&(Ipv4Addr::new(10, 128, 1, 1), 24)));
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(),
            "1"
        );

        // Again: nothing to do.
        assert_eq!(reconcile(&full).await.unwrap().changes, vec![]);

        // VXLAN is let in from the peers' addresses only (where iptables exists).
        let chain = || {
            std::process::Command::new("iptables")
                .args(["-t", "raw", "-S", "RIVER-VXLAN"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        if let Ok(rules) = chain() {
            for peer in ["192.168.77.1/32", "192.168.77.12/32", "192.168.77.13/32"] {
                assert!(rules.contains(&format!("-s {peer} -j RETURN")), "{rules}");
            }
            assert!(rules.trim_end().ends_with("-j DROP"), "{rules}");
        }

        // c leaves: its three entries go, nothing else is touched.
        let fewer = plan_with(vec![member("host", 0, 1), member("b", 2, 12)]);
        let changes = reconcile(&fewer).await.unwrap().changes;
        assert_eq!(changes.len(), 3, "{changes:?}");
        let seen = nl.observe(true).await.unwrap();
        assert_eq!(seen.entries, plan::desired(&fewer, 1400).entries);
        if let Ok(rules) = chain() {
            assert!(!rules.contains("192.168.77.13"), "c's address is still let in: {rules}");
        }

        // Drift made by hand is repaired.
        let link = nl.observe(true).await.unwrap();
        assert!(link.vxlan.unwrap().up);
        river_overlay::remove().await.unwrap();
        let again = reconcile(&fewer).await.unwrap();
        assert!(again.changes.contains(&Change::Create(plan::Dev::Bridge, None)));
        assert_eq!(
            nl.observe(true).await.unwrap().entries,
            plan::desired(&fewer, 1400).entries
        );
    });
}

/// `iptables -t filter -S` in this namespace; `None` where the node has no iptables.
fn filter_rules() -> Option<String> {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-t", "filter", "-S"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn reach_sets_become_the_filter_and_follow_the_plan() {
    in_new_netns(|| async {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut p = plan_with(vec![member("host", 0, 1), member("b", 2, 12)]);
        p.reach = vec![
            vec![ip("10.128.1.2"), ip("10.128.2.2")],
            vec![ip("10.128.1.3")],
            vec![ip("10.128.2.9")],
        ];
        reconcile(&p).await.expect("reconcile");
        let Some(listing) = filter_rules() else {
            eprintln!("SKIP: no iptables on this machine");
            return;
        };
        // What the kernel holds reads back exactly as planned, so a second reconcile rewrites
        // nothing; the bridge's traffic goes through it.
        assert_eq!(
            river_overlay::reach::parse_listing(&listing),
            river_overlay::reach::chains(&p)
        );
        assert!(listing.contains("-A FORWARD -o river0 -j RIVER-OVERLAY"), "{listing}");
        assert!(!listing.contains("-i rvx0 -o river0 -j ACCEPT"), "{listing}");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
                .unwrap()
                .trim(),
            "1"
        );

        // The second owner's only container ends: its chain goes in the same change.
        p.reach.remove(1);
        reconcile(&p).await.expect("reconcile again");
        let listing = filter_rules().unwrap();
        assert_eq!(
            river_overlay::reach::parse_listing(&listing),
            river_overlay::reach::chains(&p)
        );
        assert!(!listing.contains("RIVER-REACH-1"), "{listing}");
        assert!(!listing.contains("10.128.1.3"), "{listing}");
        assert_eq!(listing.matches("-j RIVER-OVERLAY").count(), 1, "{listing}");
    });
}
