//! The overlay network on the wire: the plan a runner builds, its health, reservations and the
//! views `river node overlay` and `river ip list` show.

use serde::{Deserialize, Serialize};

/// A new reservation and the token that claims it (shown once; the host keeps no copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpReservation {
    pub ip: String,
    pub node: String,
    pub token: String,
    pub expires_at_ms: i64,
}

/// A reserved overlay address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpView {
    pub ip: String,
    pub node: String,
    pub owner: String,
    pub expires_at_ms: i64,
    /// The task that claimed it; the address is released when that task ends.
    pub task: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayView {
    pub enabled: bool,
    pub range: String,
    pub vni: u32,
    pub port: u16,
    pub members: Vec<OverlayMemberView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMemberView {
    pub name: String,
    pub subnet: String,
    /// The member's own overlay address (its subnet's gateway).
    pub address: String,
    pub underlay: Option<String>,
    pub state: String,
    /// Containers on it with an overlay address now.
    pub containers: u32,
    /// The member's last reconcile, as it reported it.
    pub health: Option<OverlayHealth>,
}

/// What a member says after reconciling its overlay devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayHealth {
    pub ok: bool,
    pub detail: String,
    pub mtu: u32,
    pub peers: u32,
    pub at_ms: i64,
}

impl OverlayHealth {
    /// A reconcile that made `changes` changes, or failed with `Err(why)`.
    pub fn of(result: Result<(u32, usize), String>, peers: usize, at_ms: i64) -> Self {
        let peers = u32::try_from(peers).unwrap_or(u32::MAX);
        match result {
            Ok((mtu, changes)) => Self {
                ok: true,
                detail: format!("{changes} changes"),
                mtu,
                peers,
                at_ms,
            },
            Err(detail) => Self {
                ok: false,
                detail,
                mtu: 0,
                peers,
                at_ms,
            },
        }
    }
}

/// The overlay as one member must build it; sent by the host whenever membership or a reach set
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConfig {
    pub vni: u32,
    pub port: u16,
    pub range: String,
    pub mtu: Option<u32>,
    pub me: OverlayPeer,
    pub peers: Vec<OverlayPeer>,
    /// The reach sets: for each owner, the overlay addresses of their containers that have not
    /// ended, anywhere in the cluster. A container takes traffic from the overlay only from its
    /// own set (and the members' gateways).
    pub reach: Vec<Vec<std::net::Ipv4Addr>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPeer {
    pub name: String,
    pub subnet: String,
    pub underlay: std::net::Ipv4Addr,
}
