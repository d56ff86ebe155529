//! What happens in the cluster, as typed events out of the services: a task's state changed, a
//! node came online or went offline. The audit log reads them (`record`); a dashboard's live view
//! and metrics are the next readers. A slow reader misses events (it is told how many) and never
//! holds up the services.

use crate::Ctx;
use river_task::state::TaskState;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many events a reader may fall behind before it misses some.
const BACKLOG: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostEvent {
    /// Task `id`, `owner`'s, is now in `state` (stored before this is sent).
    TaskChanged { id: u64, owner: String, state: TaskState },
    /// Node `name` is online: its session settled (`why`: its address) or its heartbeats resumed.
    NodeOnline { name: String, why: String },
    /// Node `name` went offline: no heartbeat in time.
    NodeOffline { name: String },
    /// Node `name` reported its usage (cores, memory, GPUs), now stored: with every heartbeat.
    NodeUsage { name: String },
}

pub(crate) struct Events(broadcast::Sender<HostEvent>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Events {
    /// Sends `e` to every reader there is (none is fine).
    pub(crate) fn publish(&self, e: HostEvent) {
        let _ = self.0.send(e);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.0.subscribe()
    }

    /// Tasks `ids` of `owner` are now in `state`, written together (a submission, an approval).
    pub(crate) fn tasks_changed(&self, ids: &[u64], owner: &str, state: TaskState) {
        for id in ids {
            self.publish(HostEvent::TaskChanged {
                id: *id,
                owner: owner.to_owned(),
                state,
            });
        }
    }
}

/// The audit log's reader: nodes' comings and goings become rows of the audit trail (a task's
/// states are recorded in the task itself).
pub(crate) async fn record(ctx: Arc<Ctx>, mut events: broadcast::Receiver<HostEvent>) {
    loop {
        let e = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("the audit log missed {n} events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let row = match &e {
            HostEvent::NodeOnline { name, why } => Some((format!("node {name}"), "node.online", why.clone())),
            HostEvent::NodeOffline { name } => Some(("host".to_owned(), "node.offline", name.clone())),
            HostEvent::TaskChanged { .. } | HostEvent::NodeUsage { .. } => None,
        };
        if let Some((actor, action, detail)) = row {
            if let Err(err) = ctx.store.event(ctx.clock.now_ms(), &actor, action, &detail).await {
                tracing::error!("audit log: recording {e:?}: {err}");
            }
        }
    }
}
