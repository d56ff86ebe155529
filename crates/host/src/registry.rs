//! Live state of the nodes: which connection each runner is on, and whether it is online.
//!
//! The database is the record; this is the fast path the heartbeat handler and the liveness
//! monitor use, loaded from the database at start so a restarted host keeps judging nodes by
//! their last heartbeat.

use crate::events::HostEvent;
use crate::Ctx;
use river_mesh::Connection;
use river_proto::msg::{HostMsg, NodeState};
use river_store::NodeRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

/// A runner's live session: its connection, and the queue of messages for its control stream.
struct Session {
    /// `None` only for a runner simulated in memory (tests of the services).
    conn: Option<Connection>,
    tx: tokio::sync::mpsc::UnboundedSender<HostMsg>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    live: HashMap<String, (NodeState, Option<i64>)>,
    /// Nodes the records do not know that tried to connect: the certificate each presented (its
    /// serial and expiry), for `river node admit`.
    unknown: HashMap<String, (String, i64)>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps behind, still consistent enough.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn load(&self, nodes: &[NodeRecord]) {
        let mut g = self.lock();
        for n in nodes {
            g.live.insert(n.name.clone(), (n.state, n.last_heartbeat_ms));
        }
    }

    /// A runner connected. A previous connection of the same node (a runner that restarted
    /// before its old connection timed out) is closed.
    pub fn attach(&self, name: &str, conn: Connection, tx: tokio::sync::mpsc::UnboundedSender<HostMsg>) {
        let session = Session { conn: Some(conn), tx };
        if let Some(old) = self.lock().sessions.insert(name.to_owned(), session) {
            if let Some(c) = old.conn {
                c.close(
                    river_mesh::close::DONE,
                    b"replaced by a newer connection from the same node",
                );
            }
        }
    }

    /// A runner simulated in memory: what the host sends it arrives on `tx`, and it streams
    /// nothing (no connection).
    #[cfg(test)]
    pub fn attach_in_memory(&self, name: &str, tx: tokio::sync::mpsc::UnboundedSender<HostMsg>) {
        self.lock().sessions.insert(name.to_owned(), Session { conn: None, tx });
    }

    /// A simulated runner goes away.
    #[cfg(test)]
    pub fn detach_in_memory(&self, name: &str) {
        self.lock().sessions.remove(name);
    }

    pub fn detach(&self, name: &str, conn: &Connection) {
        let mut g = self.lock();
        if g.sessions
            .get(name)
            .is_some_and(|s| s.conn.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()))
        {
            g.sessions.remove(name);
        }
    }

    /// Queues a message for a runner's control stream; false when it has no session.
    pub fn send(&self, name: &str, msg: HostMsg) -> bool {
        self.lock().sessions.get(name).is_some_and(|s| s.tx.send(msg).is_ok())
    }

    /// Nodes with a session, by name.
    pub fn connected_nodes(&self) -> Vec<(String, Connection)> {
        let mut out: Vec<_> = self
            .lock()
            .sessions
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.conn.clone()?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The connection of a runner's session, to open streams toward it.
    pub fn connection(&self, name: &str) -> Option<Connection> {
        self.lock().sessions.get(name).and_then(|s| s.conn.clone())
    }

    pub fn connected(&self, name: &str) -> bool {
        self.lock().sessions.contains_key(name)
    }

    /// A heartbeat or hello arrived. Returns true when this brings the node back online.
    pub fn seen(&self, name: &str, now_ms: i64) -> bool {
        let mut g = self.lock();
        let entry = g.live.entry(name.to_owned()).or_insert((NodeState::Offline, None));
        let was_offline = entry.0 == NodeState::Offline;
        *entry = (NodeState::Online, Some(now_ms));
        was_offline
    }

    pub fn state(&self, name: &str) -> Option<NodeState> {
        self.lock().live.get(name).map(|e| e.0)
    }

    /// A node the records do not know tried to connect with this certificate.
    pub fn unknown(&self, name: &str, serial: &str, expires_at: i64) {
        self.lock()
            .unknown
            .insert(name.to_owned(), (serial.to_owned(), expires_at));
    }

    /// The certificate an unknown node last presented, forgotten once taken.
    pub fn take_unknown(&self, name: &str) -> Option<(String, i64)> {
        self.lock().unknown.remove(name)
    }

    /// Forgets a removed node and cuts its connection.
    pub fn remove(&self, name: &str) {
        let mut g = self.lock();
        g.live.remove(name);
        if let Some(c) = g.sessions.remove(name).and_then(|s| s.conn) {
            c.close(river_mesh::close::REVOKED, b"this node was removed from the cluster");
        }
    }

    /// Applies the liveness policy; returns the nodes whose state changed.
    fn tick(&self, policy: &river_proto::liveness::LivenessPolicy, now_ms: i64) -> Vec<(String, NodeState)> {
        let mut g = self.lock();
        let changes: Vec<(String, NodeState)> = policy
            .changes(g.live.iter().map(|(n, (s, last))| (n.as_str(), *s, *last)), now_ms)
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        for (n, s) in &changes {
            if let Some(e) = g.live.get_mut(n) {
                e.0 = *s;
            }
        }
        changes
    }
}

/// Marks nodes offline (and online again) as their heartbeats stop and resume.
pub(crate) async fn monitor(ctx: Arc<Ctx>) {
    let period = Duration::from_millis((ctx.policy.heartbeat_interval_ms / 2).clamp(100, 1_000));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_liveness(&ctx).await;
    }
}

/// One look at every node's last heartbeat: a node silent for too long is offline (its tasks
/// lost until it is back), one heard again is online.
pub(crate) async fn check_liveness(ctx: &Ctx) {
    for (name, state) in ctx.registry.tick(&ctx.policy, ctx.clock.now_ms()) {
        if let Err(e) = ctx.store.set_node_state(&name, state).await {
            tracing::error!(node = %name, "recording node state: {e}");
        }
        match state {
            NodeState::Offline => {
                tracing::warn!(node = %name, "node is offline: no heartbeat for {}ms", ctx.policy.offline_after_ms);
                ctx.events.publish(HostEvent::NodeOffline { name: name.clone() });
                crate::tasks::node_lost(ctx, &name).await;
            }
            NodeState::Online => {
                tracing::info!(node = %name, "node is online");
                ctx.events.publish(HostEvent::NodeOnline {
                    name: name.clone(),
                    why: "heartbeat".into(),
                });
            }
        }
    }
}
