//! This node's part of the overlay: the plan the host last sent, reconciled at once and every
//! [`PERIOD`] (devices and forwarding entries through `river_overlay`, the Docker network on the
//! bridge through `river_docker`), each outcome reported to the host. Containers that need an
//! overlay address wait until the network is ready.

use river_overlay::{Ipv4Net, Member, Plan, Role};
use river_proto::msg::{OverlayConfig, OverlayHealth, RunnerMsg};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the overlay needs of the node it runs on (the executor): its engine, the way to the host,
/// a place for background work. A trait, so this module never reaches up into `exec`.
pub(crate) trait OverlayNode: Send + Sync + 'static {
    fn overlay(&self) -> &NodeOverlay;
    fn report(&self, msg: RunnerMsg) -> bool;
    fn engine(&self) -> impl std::future::Future<Output = Result<&river_docker::Runtime, String>> + Send;
    fn spawn_work(&self, work: impl std::future::Future<Output = ()> + Send + 'static);
}

/// The Docker network containers on the overlay join.
pub(crate) const NETWORK: &str = "river-overlay";
/// How often the node repairs its overlay even when nothing was announced.
const PERIOD: Duration = Duration::from_secs(30);
/// How long a task waits for the overlay before it fails.
const READY_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Pending,
    Ready(Ipv4Net),
    Failed(String),
}

pub(crate) struct NodeOverlay {
    plan: watch::Sender<Option<Plan>>,
    ready: watch::Sender<Readiness>,
    started: AtomicBool,
}

impl Default for NodeOverlay {
    fn default() -> Self {
        Self {
            plan: watch::channel(None).0,
            ready: watch::channel(Readiness::Pending).0,
            started: AtomicBool::new(false),
        }
    }
}

/// The host's description, as the reconciler takes it.
pub(crate) fn plan_of(cfg: &OverlayConfig) -> Result<Plan, String> {
    let member = |p: &river_proto::msg::OverlayPeer| -> Result<Member, String> {
        Ok(Member {
            name: p.name.clone(),
            subnet: p.subnet.parse().map_err(|e| format!("peer {}: {e}", p.name))?,
            underlay: p.underlay,
        })
    };
    Ok(Plan {
        vni: cfg.vni,
        port: cfg.port,
        range: cfg.range.parse().map_err(|e| format!("overlay range: {e}"))?,
        mtu: cfg.mtu,
        role: Role::Runner,
        me: member(&cfg.me)?,
        peers: cfg.peers.iter().map(member).collect::<Result<_, _>>()?,
        reach: cfg.reach.clone(),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl NodeOverlay {
    /// The host sent a plan: keep it and reconcile (starting the loop on the first one).
    pub(crate) fn announce<N: OverlayNode>(&self, node: &Arc<N>, cfg: &OverlayConfig) {
        match plan_of(cfg) {
            Ok(plan) => {
                self.plan.send_replace(Some(plan));
            }
            Err(why) => {
                tracing::error!("overlay: the host's plan is unusable: {why}");
                return;
            }
        }
        if !self.started.swap(true, Ordering::SeqCst) {
            let rx = self.plan.subscribe();
            let looped = node.clone();
            node.spawn_work(async move { keep(looped, rx).await });
        }
    }

    /// Waits until the overlay network is ready for an address in `ip`'s subnet.
    pub(crate) async fn ready_for(&self, ip: std::net::Ipv4Addr) -> Result<(), String> {
        let mut rx = self.ready.subscribe();
        let wait = rx.wait_for(|r| match r {
            Readiness::Ready(net) => net.contains(ip),
            Readiness::Failed(_) | Readiness::Pending => false,
        });
        let waited = tokio::time::timeout(READY_WAIT, wait).await.is_ok_and(|r| r.is_ok());
        drop(rx);
        if waited {
            return Ok(());
        }
        {
            Err(match &*self.ready.borrow() {
                Readiness::Failed(why) => format!("the overlay network is not working on this node: {why}"),
                Readiness::Ready(net) => format!("{ip} is not in this node's overlay subnet {net}"),
                Readiness::Pending => {
                    "the overlay network is not set up on this node yet (has the host sent its plan?)".into()
                }
            })
        }
    }
}

async fn keep<N: OverlayNode>(node: Arc<N>, mut plans: watch::Receiver<Option<Plan>>) {
    loop {
        let plan = plans.borrow_and_update().clone();
        if let Some(plan) = plan {
            let health = once(&*node, &plan).await;
            let _ = node.report(RunnerMsg::Overlay(health));
        }
        tokio::select! {
            changed = plans.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(PERIOD) => {}
        }
    }
}

async fn once<N: OverlayNode>(node: &N, plan: &Plan) -> OverlayHealth {
    let peers = plan.peers.len();
    let result = async {
        let out = river_overlay::reconcile(plan).await.map_err(|e| e.to_string())?;
        let rt = node.engine().await?;
        let net = river_docker::BridgeNetwork {
            name: NETWORK.into(),
            bridge: river_overlay::plan::BRIDGE_DEV.into(),
            subnet: plan.me.subnet.to_string(),
            gateway: river_overlay::net::gateway(&plan.me.subnet).to_string(),
            mtu: out.mtu,
        };
        let created = rt.ensure_network(&net).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((out, created))
    }
    .await;
    match result {
        Ok((out, created)) => {
            if !out.changes.is_empty() || created {
                tracing::info!(
                    changes = out.changes.len(),
                    peers,
                    subnet = %plan.me.subnet,
                    "overlay reconciled"
                );
            }
            node.overlay().ready.send_replace(Readiness::Ready(plan.me.subnet));
            OverlayHealth::of(Ok((out.mtu, out.changes.len())), peers, now_ms())
        }
        Err(why) => {
            tracing::error!("overlay: {why}");
            node.overlay().ready.send_replace(Readiness::Failed(why.clone()));
            OverlayHealth::of(Err(why), peers, now_ms())
        }
    }
}
