//! The overlay on the host: each member's subnet (persisted, kept across restarts), the plan each
//! runner gets whenever membership changes, the host's own VXLAN device (so containers reach the
//! host by its overlay address), container addresses for the scheduler, who may reach whom
//! ([`reach`]), and IP reservations with HMAC-signed tokens ([`reservations`]).

use crate::reply::{refused, HostError, HostResult};
use crate::Ctx;
use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use river_overlay::net::{free_address, free_subnet, gateway};
use river_overlay::{Ipv4Net, Member, Plan, Role};
use river_proto::msg::{
    ErrorKind, HostMsg, OverlayConfig, OverlayHealth, OverlayMemberView, OverlayPeer, OverlayView, Response,
};
use river_store::prelude::*;
use river_store::StoreError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The host's row in `overlay_subnets` (no node can be named this).
const HOST_MEMBER: &str = "@host";
/// How the host appears among the peers.
const HOST_NAME: &str = "host";
/// How often the host repairs its own device and drops expired reservations.
const PERIOD: Duration = Duration::from_secs(30);
/// Longest a reservation may be held before it is used.
const MAX_TTL: Duration = Duration::from_secs(7 * 86_400);

pub(crate) struct Overlay {
    range: Ipv4Net,
    prefix: u8,
    vni: u32,
    port: u16,
    mtu: Option<u32>,
    underlay: Ipv4Addr,
    key: ring::hmac::Key,
    /// Member → (subnet, underlay address once it has connected).
    members: Mutex<BTreeMap<String, (Ipv4Net, Option<Ipv4Addr>)>>,
    health: Mutex<HashMap<String, OverlayHealth>>,
    /// Owner → the overlay addresses of their containers ([`reach`]), as last sent.
    reach: Mutex<BTreeMap<String, BTreeSet<Ipv4Addr>>>,
    /// One reconcile of the host's own device at a time.
    reconciling: tokio::sync::Mutex<()>,
}

/// The HMAC key for reservation tokens, in `state_dir/overlay.key`, kept so tokens survive host
/// restarts.
fn load_key(state_dir: &Path) -> anyhow::Result<ring::hmac::Key> {
    let bytes = crate::secrets::secret_file(
        &state_dir.join("overlay.key"),
        "outstanding reservation tokens stop working",
    )?;
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

/// What a reservation token says; signed, so none of it can be changed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claim {
    ip: Ipv4Addr,
    node: String,
    exp: i64,
    nonce: String,
}

const TOKEN_PREFIX: &str = "rvip1";

mod reach;
mod reservations;
pub(crate) use reach::refresh_reach;
pub(crate) use reservations::{claim, hold, list, release, reserve, take_token};

impl Overlay {
    pub(crate) async fn open(cfg: &crate::HostConfig, store: &dyn Repositories) -> anyhow::Result<Option<Self>> {
        let o = &cfg.overlay;
        if !o.enabled {
            return Ok(None);
        }
        let range: Ipv4Net = o.range.parse().context("overlay.range")?;
        let shape = format!("{range} /{}", o.node_prefix);
        let subnets = store.overlay_subnets().await?;
        match store.meta("overlay.shape").await? {
            Some(old) if old != shape && subnets.len() > 1 => anyhow::bail!(
                "the overlay was {old} (range, node prefix) and the config now says {shape}: nodes hold subnets of the old one and their containers' addresses would change; put the old values back, or remove the nodes first"
            ),
            _ => store.set_meta("overlay.shape", &shape).await?,
        }
        let underlay = o
            .address
            .or_else(|| match cfg.listen.ip() {
                IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
                _ => None,
            })
            .or_else(|| cfg.advertise.iter().find_map(|a| a.split(':').next()?.parse().ok()))
            .context(
                "the overlay needs the host's own address: set overlay.address (or listen on a specific IPv4 address)",
            )?;
        store.assign_subnet(HOST_MEMBER, 0, Some(&underlay.to_string())).await?;
        let key = load_key(&cfg.state_dir)?;
        let overlay = Self {
            range,
            prefix: o.node_prefix,
            vni: o.vni,
            port: o.port,
            mtu: o.mtu,
            underlay,
            key,
            members: Mutex::new(BTreeMap::new()),
            health: Mutex::new(HashMap::new()),
            reach: Mutex::new(BTreeMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
        };
        overlay.load(store).await?;
        // Runners that reconnect after a restart get the sets with their first plan.
        overlay.set_reach(reach::sets_of(&store.unfinished_tasks().await?));
        Ok(Some(overlay))
    }

    async fn load(&self, store: &dyn Repositories) -> anyhow::Result<()> {
        let mut members = BTreeMap::new();
        for (node, idx, underlay) in store.overlay_subnets().await? {
            let Some(subnet) = self.range.subnet(self.prefix, idx) else {
                tracing::warn!(%node, idx, "overlay subnet outside the range; ignored");
                continue;
            };
            members.insert(node, (subnet, underlay.and_then(|u| u.parse().ok())));
        }
        *self.members.lock().unwrap_or_else(|e| e.into_inner()) = members;
        Ok(())
    }

    fn members(&self) -> BTreeMap<String, (Ipv4Net, Option<Ipv4Addr>)> {
        self.members.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn subnet_of(&self, node: &str) -> Option<Ipv4Net> {
        self.members().get(node).map(|m| m.0)
    }

    /// Peers as every member sees them: all that have connected at least once.
    fn peers(&self) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter_map(|(name, (subnet, underlay))| {
                Some(Member {
                    name: if name == HOST_MEMBER { HOST_NAME.into() } else { name },
                    subnet,
                    underlay: underlay?,
                })
            })
            .collect()
    }

    /// The plan one runner gets.
    fn config_for(&self, node: &str) -> Option<OverlayConfig> {
        let peers = self.peers();
        let me = peers.iter().find(|m| m.name == node)?.clone();
        let wire = |m: &Member| OverlayPeer {
            name: m.name.clone(),
            subnet: m.subnet.to_string(),
            underlay: m.underlay,
        };
        Some(OverlayConfig {
            vni: self.vni,
            port: self.port,
            range: self.range.to_string(),
            mtu: self.mtu,
            me: wire(&me),
            peers: peers.iter().filter(|m| m.name != node).map(wire).collect(),
            reach: self.reach_sets(),
        })
    }

    fn host_plan(&self) -> Plan {
        let peers = self.peers();
        let me = Member {
            name: HOST_NAME.into(),
            subnet: self.range.subnet(self.prefix, 0).unwrap_or(self.range),
            underlay: self.underlay,
        };
        Plan {
            vni: self.vni,
            port: self.port,
            range: self.range,
            mtu: self.mtu,
            role: Role::Host,
            peers: peers.into_iter().filter(|m| m.name != HOST_NAME).collect(),
            me,
            reach: Vec::new(),
        }
    }

    async fn reconcile_host(&self) {
        let _one = self.reconciling.lock().await;
        let plan = self.host_plan();
        let peers = plan.peers.len();
        let result = match river_overlay::reconcile(&plan).await {
            Ok(out) => {
                if !out.changes.is_empty() {
                    tracing::info!(changes = out.changes.len(), peers, "overlay: host device reconciled");
                }
                Ok((out.mtu, out.changes.len()))
            }
            Err(e) => {
                tracing::error!("overlay: host device: {e}");
                Err(e.to_string())
            }
        };
        self.record_health(HOST_NAME, OverlayHealth::of(result, peers, crate::clock::now_ms()));
    }

    pub(crate) fn record_health(&self, node: &str, h: OverlayHealth) {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_owned(), h);
    }

    /// A free container address on `node`, none of `taken`.
    pub(crate) fn free_ip(&self, node: &str, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        free_address(&self.subnet_of(node)?, taken)
    }

    fn sign(&self, claim: &Claim) -> String {
        let payload = serde_json::to_vec(claim).unwrap_or_default();
        let tag = ring::hmac::sign(&self.key, &payload);
        format!("{TOKEN_PREFIX}.{}.{}", B64.encode(&payload), B64.encode(tag.as_ref()))
    }

    /// The claim in `token` if the host signed it; expiry and use are checked by the caller.
    fn verify(&self, token: &str) -> Option<Claim> {
        let mut parts = token.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let payload = B64.decode(payload).ok()?;
        let tag = B64.decode(tag).ok()?;
        ring::hmac::verify(&self.key, &payload, &tag).ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

/// The host's part, for as long as the host serves (only when the overlay is on): its own device
/// now and every [`PERIOD`], expired reservations freed.
pub(crate) async fn run(ctx: std::sync::Arc<Ctx>) {
    if ctx.overlay.is_none() {
        return;
    }
    loop {
        if let Err(e) = refresh_reach(&ctx).await {
            tracing::error!("overlay: reading who holds which address: {e}");
        }
        // Every runner gets its plan again: one that missed an announcement catches up.
        broadcast(&ctx).await;
        match ctx.store.release_reservations(ctx.clock.now_ms()).await {
            Ok(freed) if !freed.is_empty() => tracing::info!(?freed, "released reservations"),
            Ok(_) => {}
            Err(e) => tracing::error!("releasing reservations: {e}"),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// A runner's control session began: give it a subnet (or its old one), note where it is, and
/// tell every member.
pub(crate) async fn attached(ctx: &Ctx, node: &str, remote: SocketAddr) {
    let Some(o) = ctx.overlay.as_ref() else { return };
    let underlay = match remote.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let Some(underlay) = underlay else {
        tracing::warn!(%node, %remote, "overlay: the node connects over IPv6; the overlay needs IPv4 between nodes");
        return;
    };
    // Its devices would be the host's own: one network namespace holds one overlay member.
    if underlay == o.underlay || underlay.is_loopback() {
        tracing::warn!(%node, %remote, "overlay: the node runs on the host's own machine and cannot join the overlay; its tasks use the engine's network");
        return;
    }
    let assigned = async {
        for _ in 0..5 {
            let subnets = ctx.store.overlay_subnets().await?;
            let idx = match subnets.iter().find(|(n, _, _)| n == node) {
                Some((_, i, _)) => *i,
                None => {
                    let used: BTreeSet<u64> = subnets.iter().map(|(_, i, _)| *i).collect();
                    match free_subnet(o.range.subnets(o.prefix), &used) {
                        Some(i) => i,
                        None => anyhow::bail!("the overlay range {} has no free /{} subnet left", o.range, o.prefix),
                    }
                }
            };
            match ctx.store.assign_subnet(node, idx, Some(&underlay.to_string())).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Exists(_)) => continue,
                Err(e) => {
                    tracing::warn!(%node, "overlay: recording the subnet: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        anyhow::bail!("could not settle on a free subnet")
    };
    if let Err(e) = assigned.await {
        tracing::error!(%node, "overlay: {e}");
        return;
    }
    if let Err(e) = o.load(ctx.store.as_ref()).await {
        tracing::error!("overlay: {e}");
    }
    broadcast(ctx).await;
}

/// A node was removed: its subnet is freed and every other member drops its entries.
pub(crate) async fn removed(ctx: &Ctx, node: &str) -> anyhow::Result<()> {
    let Some(o) = ctx.overlay.as_ref() else { return Ok(()) };
    ctx.store.remove_subnet(node).await?;
    o.load(ctx.store.as_ref()).await?;
    o.health.lock().unwrap_or_else(|e| e.into_inner()).remove(node);
    broadcast(ctx).await;
    Ok(())
}

/// Sends every connected runner its plan and brings the host's own device in line.
async fn broadcast(ctx: &Ctx) {
    let Some(o) = ctx.overlay.as_ref() else { return };
    send_plans(ctx);
    o.reconcile_host().await;
}

/// Sends every connected runner its plan.
fn send_plans(ctx: &Ctx) {
    let Some(o) = ctx.overlay.as_ref() else { return };
    for (node, _) in ctx.registry.connected_nodes() {
        if let Some(cfg) = o.config_for(&node) {
            ctx.registry.send(&node, HostMsg::Overlay(Box::new(cfg)));
        }
    }
}

fn off() -> HostError {
    refused(
        ErrorKind::Invalid,
        "the overlay network is off on this cluster; an admin turns it on with `[overlay] enabled = true` in the host config",
    )
}

/// Addresses no new container may get: those of containers that have not ended, and reservations.
pub(crate) async fn taken(ctx: &Ctx) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
    // Every task that has not ended keeps its address: a stopped VPS (its container keeps it) and
    // one queued to start again (it asks for it back) as much as a running task.
    let mut taken: BTreeSet<Ipv4Addr> = ctx
        .store
        .unfinished_tasks()
        .await?
        .iter()
        .filter_map(reach::address_of)
        .collect();
    let now = ctx.clock.now_ms();
    for r in ctx.store.reservations().await? {
        if r.task_id.is_some() || r.expires_at_ms > now {
            taken.extend(r.ip.parse::<Ipv4Addr>().ok());
        }
    }
    Ok(taken)
}

pub(crate) async fn view(ctx: &Ctx) -> HostResult<Response> {
    let Some(o) = ctx.overlay.as_ref() else {
        return Ok(Response::Overlay(Box::new(OverlayView {
            enabled: false,
            range: String::new(),
            vni: 0,
            port: 0,
            members: Vec::new(),
        })));
    };
    let in_use = ctx.store.holding_tasks().await?;
    let health = o.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let members = o
        .members()
        .into_iter()
        .map(|(name, (subnet, underlay))| {
            let host = name == HOST_MEMBER;
            let name = if host { HOST_NAME.to_owned() } else { name };
            let state = if host {
                "online".to_owned()
            } else {
                ctx.registry
                    .state(&name)
                    .map_or("unknown".into(), |s| format!("{s:?}").to_lowercase())
            };
            let containers = in_use
                .iter()
                .filter(|t| t.placement.as_ref().is_some_and(|p| p.node == name && p.ip.is_some()))
                .count();
            OverlayMemberView {
                subnet: subnet.to_string(),
                address: gateway(&subnet).to_string(),
                underlay: underlay.map(|u| u.to_string()),
                state,
                containers: u32::try_from(containers).unwrap_or(u32::MAX),
                health: health.get(&name).cloned(),
                name,
            }
        })
        .collect();
    Ok(Response::Overlay(Box::new(OverlayView {
        enabled: true,
        range: o.range.to_string(),
        vni: o.vni,
        port: o.port,
        members,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(key: &[u8]) -> Overlay {
        Overlay {
            range: "10.128.0.0/12".parse().unwrap(),
            prefix: 24,
            vni: 1,
            port: 4789,
            mtu: None,
            underlay: Ipv4Addr::LOCALHOST,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            members: Mutex::default(),
            health: Mutex::default(),
            reach: Mutex::default(),
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    fn claim() -> Claim {
        Claim {
            ip: Ipv4Addr::new(10, 128, 1, 2),
            node: "a".into(),
            exp: 1_000,
            nonce: "n".into(),
        }
    }

    #[test]
    fn tokens_verify_only_unaltered_and_only_with_the_same_key() {
        let o = overlay(&[7; 32]);
        let token = o.sign(&claim());
        let back = o.verify(&token).expect("own token verifies");
        assert_eq!((back.ip, back.node.as_str(), back.exp), (claim().ip, "a", 1_000));
        // Another cluster's key: refused.
        assert!(overlay(&[8; 32]).verify(&token).is_none());
        // A changed claim (another address) with the old signature: refused.
        let (_, rest) = token.split_once('.').unwrap();
        let (_, tag) = rest.split_once('.').unwrap();
        let mut forged = claim();
        forged.ip = Ipv4Addr::new(10, 128, 1, 3);
        let payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert!(o.verify(&format!("{TOKEN_PREFIX}.{payload}.{tag}")).is_none());
        assert!(o.verify("rvip1.garbage").is_none());
        assert!(o.verify("").is_none());
    }
}
