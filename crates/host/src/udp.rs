//! UDP forwarding through the host. A flow is opened and authorized like a TCP forward, on a
//! `Forward` stream (user → host → runner); its packets then travel as QUIC datagrams tagged with
//! the id of that stream on each connection. The host keeps, for each flow, the pair of
//! (connection, stream id) it joins, and passes datagrams across without looking at them.

use crate::Ctx;
use river_mesh::Connection;
use river_proto::msg::{parse_udp_datagram, udp_datagram};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type End = (usize, u64);

#[derive(Default)]
pub(crate) struct Routes {
    map: Mutex<HashMap<End, (Connection, u64)>>,
}

impl Routes {
    /// Joins flow `a_flow` on `a` with flow `b_flow` on `b`, both ways.
    pub fn add(&self, a: &Connection, a_flow: u64, b: &Connection, b_flow: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.insert((a.stable_id(), a_flow), (b.clone(), b_flow));
            m.insert((b.stable_id(), b_flow), (a.clone(), a_flow));
        }
    }

    pub fn remove(&self, a: &Connection, a_flow: u64, b: &Connection, b_flow: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&(a.stable_id(), a_flow));
            m.remove(&(b.stable_id(), b_flow));
        }
    }

    fn route(&self, from: &Connection, flow: u64) -> Option<(Connection, u64)> {
        self.map.lock().ok()?.get(&(from.stable_id(), flow)).cloned()
    }
}

/// Passes on the datagrams arriving on `conn` until it closes. A datagram of no known flow (one
/// just closed, or a peer's mistake) is dropped, as UDP would.
pub(crate) async fn pump(ctx: Arc<Ctx>, conn: Connection) {
    while let Ok(d) = conn.read_datagram().await {
        let Some((flow, packet)) = parse_udp_datagram(&d) else {
            continue;
        };
        if let Some((to, their_flow)) = ctx.udp.route(&conn, flow) {
            if let Err(e) = to.send_datagram(udp_datagram(their_flow, packet).into()) {
                tracing::debug!("dropped a forwarded UDP packet: {e}");
            }
        }
    }
}
