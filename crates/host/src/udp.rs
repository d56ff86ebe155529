//! UDP forwarding through the host. A flow is opened and authorized like a TCP forward, on a
//! `Forward` stream (user → host → runner); its packets then travel as QUIC datagrams tagged with
//! the id of that stream on each connection, or as frames on the streams when too large for a
//! datagram on the next path (see [`river_mesh::udp`]). The host keeps, for each flow, the way
//! on toward the other side, and passes packets across without looking at them; what it cannot
//! pass on is counted and reported to the user, with the runner's own reports.

use crate::Ctx;
use river_mesh::udp::{frames, write_frames, Drops, FlowOut, Uplink, REPORT_EVERY};
use river_mesh::{Connection, MsgReader, RecvStream, SendStream};
use river_proto::msg::{parse_udp_datagram, UdpFrame};
use std::collections::HashMap;
use std::sync::Mutex;

type End = (usize, u64);

/// Where a packet arriving on one end of a flow goes, and where its loss is counted.
#[derive(Clone)]
struct Hop {
    out: FlowOut,
    drops: Drops,
}

#[derive(Default)]
pub(crate) struct Routes {
    map: Mutex<HashMap<End, Hop>>,
}

impl Routes {
    fn add(&self, from: &Connection, flow: u64, hop: Hop) {
        if let Ok(mut m) = self.map.lock() {
            m.insert((from.stable_id(), flow), hop);
        }
    }

    fn remove(&self, from: &Connection, flow: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&(from.stable_id(), flow));
        }
    }

    fn route(&self, from: &Connection, flow: u64) -> Option<Hop> {
        self.map.lock().ok()?.get(&(from.stable_id(), flow)).cloned()
    }
}

impl Hop {
    fn pass(&self, packet: &[u8]) {
        if let Err(why) = self.out.push(packet) {
            self.drops.add(&format!("at the host, {why}"));
        }
    }
}

/// Passes on the datagrams arriving on `conn` until it closes. A datagram of no known flow (one
/// just closed, or a peer's mistake) is dropped, as UDP would.
pub(crate) async fn pump(ctx: std::sync::Arc<Ctx>, conn: Connection) {
    while let Ok(d) = conn.read_datagram().await {
        let Some((flow, packet)) = parse_udp_datagram(&d) else {
            continue;
        };
        if let Some(hop) = ctx.udp.route(&conn, flow) {
            hop.pass(packet);
        }
    }
}

/// One side of a flow: its connection and its stream there.
pub(crate) struct Side<'a> {
    pub conn: &'a Connection,
    pub send: &'a mut SendStream,
    pub recv: &'a mut RecvStream,
}

/// Joins the user's side of an accepted flow with the runner's until either ends the flow.
pub(crate) async fn relay(ctx: &Ctx, user: Side<'_>, runner: Side<'_>) {
    let (user_flow, runner_flow) = (u64::from(user.send.id()), u64::from(runner.send.id()));
    let (to_user_tx, to_user_rx) = frames();
    let (to_runner_tx, to_runner_rx) = frames();
    let toward_user = Uplink::new(user.conn.clone()).flow(user_flow, to_user_tx);
    let toward_runner = Uplink::new(runner.conn.clone()).flow(runner_flow, to_runner_tx);
    // Losses either way are the user's to hear of.
    let drops = Drops::default();
    let up = Hop {
        out: toward_runner,
        drops: drops.clone(),
    };
    let down = Hop {
        out: toward_user.clone(),
        drops: drops.clone(),
    };
    ctx.udp.add(user.conn, user_flow, up.clone());
    ctx.udp.add(runner.conn, runner_flow, down.clone());
    let from_user = async {
        let mut reader = MsgReader::new(user.recv);
        while let Ok(Some(frame)) = reader.next::<UdpFrame>().await {
            if let UdpFrame::Packet(p) = frame {
                up.pass(&p);
            }
        }
    };
    let from_runner = async {
        let mut reader = MsgReader::new(runner.recv);
        while let Ok(Some(frame)) = reader.next::<UdpFrame>().await {
            match frame {
                UdpFrame::Packet(p) => down.pass(&p),
                UdpFrame::Dropped { count, why } => {
                    if !toward_user.report(count, why) {
                        drops.add("at the host, the queue of reports was full");
                    }
                }
            }
        }
    };
    let report = async {
        let mut every = tokio::time::interval(REPORT_EVERY);
        loop {
            every.tick().await;
            drops.report_to(&toward_user);
        }
    };
    tokio::select! {
        () = from_user => {}
        () = from_runner => {}
        () = write_frames(user.send, to_user_rx) => {}
        () = write_frames(runner.send, to_runner_rx) => {}
        () = report => {}
    }
    ctx.udp.remove(user.conn, user_flow);
    ctx.udp.remove(runner.conn, runner_flow);
    let _ = user.send.finish();
    let _ = runner.send.finish();
}
