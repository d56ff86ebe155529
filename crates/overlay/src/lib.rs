//! The overlay network: a VXLAN device on every member (host and runners), routed, with one
//! forwarding entry of each kind per peer, so that containers on different runners talk
//! directly, runner to runner. [`net`] and [`plan`] are pure (address plan, desired state, diff);
//! [`reconcile`] reads this network namespace through rtnetlink and fixes only what differs.
//!
//! Architecture invariant: rtnetlink is used here and nowhere else; nothing here knows about
//! tasks, Docker or the mesh.

pub mod firewall;
pub mod net;
mod netlink;
pub mod plan;
pub mod reach;

pub use net::Ipv4Net;
pub use netlink::{Netlink, NetlinkError};
pub use plan::{Change, Member, Plan, Role};

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Firewall(#[from] firewall::FirewallError),
    #[error("cannot turn on IP forwarding: {0}")]
    Forwarding(std::io::Error),
}

/// What one reconcile found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub mtu: u32,
    pub changes: Vec<Change>,
}

/// The MTU inside the overlay when the plan does not fix one: 1500-byte underlays give 1450.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// Makes this network namespace match `plan`, changing only what differs: running it again on
/// a correct node changes nothing, and established connections through the overlay survive it.
pub async fn reconcile(plan: &Plan) -> Result<Outcome, OverlayError> {
    let mut nl = Netlink::open()?;
    let mtu = match plan.mtu {
        Some(m) => m,
        None => {
            let underlay = nl.mtu_of_address(plan.me.underlay).await?;
            underlay
                .unwrap_or(DEFAULT_UNDERLAY_MTU)
                .saturating_sub(plan::VXLAN_OVERHEAD)
        }
    };
    let want = plan::desired(plan, mtu);
    let have = nl.observe(plan.role == Role::Runner).await?;
    let changes = plan::diff(&want, &have);
    nl.apply(&changes, &want.vxlan, mtu).await?;
    let peers: Vec<std::net::Ipv4Addr> = plan
        .peers
        .iter()
        .filter(|p| p.name != plan.me.name)
        .map(|p| p.underlay)
        .collect();
    firewall::ensure_vxlan_filter(plan.port, &peers).await?;
    if plan.role == Role::Runner {
        // Containers' traffic to peers is routed by this node.
        let path = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(path).map(|s| s.trim() != "1").unwrap_or(true) {
            std::fs::write(path, "1").map_err(OverlayError::Forwarding)?;
        }
        firewall::ensure(&plan.me.subnet, &plan.range, plan.port).await?;
        reach::ensure_bridge_filtering().await?;
        reach::ensure(plan).await?;
    }
    Ok(Outcome { mtu, changes })
}

/// Removes this namespace's overlay devices and everything on them.
pub async fn remove() -> Result<(), OverlayError> {
    Ok(Netlink::open()?.remove().await?)
}
