//! The host role: the cluster's control plane. It owns the CA, the SQLite state and the mesh
//! endpoint that runners and users connect to, and serves the HTTPS API.
//!
//! Architecture invariant: the host is a library. `river host` and `river up` start it through
//! [`start`], and tests start it in-process the same way, with a temporary state directory and
//! port 0. It never depends on the runner crate: both speak only `river_proto` messages.

pub mod backup;
pub mod config;

mod api;
mod api_tokens;
mod approvals;
mod auth;
mod clock;
mod cluster_view;
mod entrances;
mod env_edit;
mod envs;
mod events;
#[cfg(test)]
mod events_tests;
mod gateway;
mod groups;
mod init;
mod join;
mod join_failures;
#[cfg(test)]
mod joined_tests;
mod lifecycle;
mod limits;
mod logs;
mod mesh;
mod ops;
mod overlay;
mod registry;
mod reply;
mod reports;
mod rpc;
mod secrets;
#[cfg(test)]
mod service_tests;
mod sessions;
mod streams;
mod submit;
mod tasks;
mod terminal;
mod udp;
mod usage;
mod users;
mod vps;
mod waiting;
mod web;
mod web_logins;

use anyhow::Context as _;
use river_mesh::Endpoint;
use river_pki::Ca;
use river_proto::liveness::LivenessPolicy;
use river_proto::msg::TaskOwner;
use river_store::prelude::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;

pub use config::HostConfig;

/// The host's store as the services see it: its repository traits, not its database.
pub(crate) type Db = Arc<dyn Repositories>;

/// Everything a request handler needs, shared by all connections.
pub(crate) struct Ctx {
    cfg: HostConfig,
    /// What the host keeps, behind the store's repository traits (SQLite today).
    store: Db,
    ca: Ca,
    ca_fp: [u8; 32],
    registry: registry::Registry,
    policy: LivenessPolicy,
    /// Wakes the scheduler.
    kick: tokio::sync::Notify,
    /// Bumped after every write of a task, so a request can wait for a task's change rather
    /// than poll for it (`Request::TaskWait`).
    task_changed: tokio::sync::watch::Sender<u64>,
    /// Tasks whose node is fetching their environment: bytes so far and total.
    fetches: std::sync::Mutex<std::collections::HashMap<u64, (u64, u64)>>,
    /// Forwarded UDP flows.
    udp: udp::Routes,
    /// What happens, for whoever reads it (the audit log, a live view).
    events: events::Events,
    /// Each node's usage over the last hour.
    usage: usage::History,
    /// The time as the services see it.
    clock: clock::Clock,
    /// Tests only: a change made by "someone else" just before the next task write, to show what
    /// a write overtaken by another does.
    #[cfg(test)]
    meanwhile: std::sync::Mutex<Option<futures_util::future::BoxFuture<'static, ()>>>,
    /// VPSs that just stopped, for their automatic snapshots (`vps::snapshot_stopped`).
    vps_stopped: tokio::sync::mpsc::UnboundedSender<u64>,
    /// How far long operations have got, for progress bars.
    ops: ops::Ops,
    /// Running tasks as last read, so opening a forward or terminal does not query SQLite;
    /// every change of a task goes through [`Ctx::save_task`], which drops its entry.
    running: std::sync::Mutex<std::collections::HashMap<u64, river_store::TaskRecord>>,
    /// Bumped by every task write: a read that saw a write happen meanwhile is not cached.
    task_writes: std::sync::atomic::AtomicU64,
    /// The overlay network, when the config turns it on.
    overlay: Option<overlay::Overlay>,
    /// Where each VPS's SSH host key comes from.
    vps_keys: secrets::HostKeys,
    /// Users' numbers as read from the store: they never change, and every start needs one.
    user_numbers: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Users' open mesh connections.
    sessions: sessions::UserSessions,
    /// Who has tasks waiting, as last read (at most [`tasks::OWNERS_FRESH`] ago) and added to
    /// by submissions since: the scheduler reads each of their queues.
    queued_owners: std::sync::Mutex<(Option<std::time::Instant>, std::collections::BTreeSet<String>)>,
    /// Caps on the HTTPS/SSH port's connections, and on QUIC peers without a certificate.
    entrances: entrances::Entrances,
    anonymous: entrances::Entrances,
    /// The dashboard's own address.
    web_entrances: entrances::Entrances,
    /// Users' own limits, over the config's defaults.
    limits: limits::Overrides,
    /// Addresses whose joins keep failing.
    join_failures: join_failures::JoinFailures,
    /// Where the dashboard is served at the host's own address (what login links name), when it is.
    web_url: Option<String>,
}

impl Ctx {
    /// Closes every mesh connection `name` has open: their certificates were just revoked.
    /// Closes every connection `name` has open (their certificates were revoked, their account
    /// removed, disabled or given another role); how many.
    pub(crate) fn cut_off_user(&self, name: &str) -> usize {
        let n = self.sessions.cut_off(
            name,
            "an admin changed your account (revoked, removed, disabled or another role); `river whoami` says where you stand",
        );
        if n > 0 {
            tracing::info!(user = %name, connections = n, "cut off a user's open connections");
        }
        n
    }

    pub(crate) fn fetch_progress(&self, id: u64, done: u64, total: u64) {
        if let Ok(mut f) = self.fetches.lock() {
            if done >= total {
                f.remove(&id);
            } else {
                f.insert(id, (done, total));
            }
        }
    }

    /// Whose task this is, as the node that runs it needs to know them. `actor` is the task's
    /// recorded owner (`user NAME`).
    pub(crate) async fn task_owner(&self, actor: &str) -> Result<TaskOwner, river_store::StoreError> {
        let name = actor.strip_prefix("user ").unwrap_or(actor);
        let known = self.user_numbers.lock().ok().and_then(|m| m.get(name).copied());
        let number = match known {
            Some(n) => n,
            None => {
                let n = self.store.user_number(name).await?;
                if let Ok(mut m) = self.user_numbers.lock() {
                    m.insert(name.to_owned(), n);
                }
                n
            }
        };
        // Read at every start: a role may change.
        let operator = self
            .store
            .user(name)
            .await?
            .is_some_and(|u| u.role >= river_proto::msg::Role::Operator);
        Ok(TaskOwner {
            name: name.to_owned(),
            number,
            operator,
        })
    }

    /// Writes a task's changes if its stored state is still `was` (the state the change was
    /// decided from); whether it did. The only way the host writes a task: a change decided on a
    /// record read earlier never overwrites one made meanwhile.
    pub(crate) async fn save_task(
        &self,
        t: &river_store::TaskRecord,
        was: river_task::state::TaskState,
    ) -> Result<bool, river_store::StoreError> {
        use std::sync::atomic::Ordering;
        self.task_writes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut r) = self.running.lock() {
            r.remove(&t.id);
        }
        #[cfg(test)]
        {
            let meanwhile = self.meanwhile.lock().ok().and_then(|mut m| m.take());
            if let Some(change) = meanwhile {
                change.await;
            }
        }
        let saved = self.store.update_task_from(t, was).await;
        self.task_writes.fetch_add(1, Ordering::SeqCst);
        self.tasks_changed();
        saved
    }

    /// Wakes whoever waits for a task to change (after a write outside [`Ctx::save_task`]).
    pub(crate) fn tasks_changed(&self) {
        self.task_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A task, from the running-task cache when it is there.
    pub(crate) async fn task_for_stream(
        &self,
        id: u64,
    ) -> Result<Option<river_store::TaskRecord>, river_store::StoreError> {
        if let Some(t) = self.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
            return Ok(Some(t));
        }
        use std::sync::atomic::Ordering;
        let before = self.task_writes.load(Ordering::SeqCst);
        let t = self.store.task(id).await?;
        if let Some(t) = t.as_ref().filter(|t| t.state == river_task::state::TaskState::Running) {
            if let Ok(mut r) = self.running.lock() {
                // Under the lock, so no write can start between this check and the insert
                // without its removal coming after.
                if self.task_writes.load(Ordering::SeqCst) == before {
                    r.insert(id, t.clone());
                }
            }
        }
        Ok(t)
    }

    pub(crate) fn fetching(&self, id: u64) -> Option<(u64, u64)> {
        self.fetches.lock().ok()?.get(&id).copied()
    }

    /// Signs a certificate for `subject` from a CSR and reads back what it says (its serial and
    /// expiry go into the database). The error is a sentence for the requester.
    pub(crate) fn issue(
        &self,
        csr_pem: &str,
        subject: &river_pki::Subject,
        lifetime: std::time::Duration,
    ) -> Result<(String, river_pki::CertInfo), String> {
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let cert_pem = self
            .ca
            .issue_from_csr(csr_pem, subject, clock::now_s(), lifetime)
            .map_err(|e| e.to_string())?;
        let info = river_pki::pem_to_der(&cert_pem)
            .and_then(|d| river_pki::inspect(&d))
            .map_err(|e| format!("host could not read back the certificate it issued: {e}"))?;
        Ok((cert_pem, info))
    }
}

/// A running host. Dropping it does not stop it: call [`RunningHost::shutdown`].
pub struct RunningHost {
    /// Where the mesh (QUIC, UDP) listens.
    pub mesh_addr: SocketAddr,
    /// Where the HTTPS API (TCP) listens.
    pub api_addr: SocketAddr,
    /// Where the dashboard is served at the host's own address (`[web]`), when it is.
    pub web_addr: Option<SocketAddr>,
    /// The first admin's credential bundle, for the local CLI.
    pub admin_dir: PathBuf,
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    ctx: Arc<Ctx>,
    endpoint: Endpoint,
    serving: JoinSet<()>,
    /// Released when the host is shut down (or the process ends).
    lock: river_creds::StateLock,
}

impl std::fmt::Debug for RunningHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHost")
            .field("mesh_addr", &self.mesh_addr)
            .field("api_addr", &self.api_addr)
            .finish()
    }
}

impl RunningHost {
    /// Makes a node join token, as `river token create` does, for `river up` and tests.
    pub async fn create_node_token(&self, ttl_secs: u64, uses: u32) -> anyhow::Result<String> {
        let created = rpc::create_node_token(&self.ctx, "host", ttl_secs, uses).await?;
        Ok(created.token)
    }

    /// Stops accepting, closes every connection and the database.
    pub async fn shutdown(mut self) {
        self.endpoint.close(river_mesh::close::DONE, b"host shutting down");
        self.serving.abort_all();
        while self.serving.join_next().await.is_some() {}
        self.endpoint.wait_idle().await;
        self.ctx.store.close().await;
        drop(self.lock);
    }

    /// Waits until one of the host's serving loops ends (they only end on a fatal error).
    pub async fn wait(&mut self) {
        self.serving.join_next().await;
    }
}

/// Starts a host: prepares the state directory, binds the mesh and API ports and serves.
pub async fn start(cfg: HostConfig) -> anyhow::Result<RunningHost> {
    let state = init::prepare(&cfg).await?;
    let (endpoint, listener) = bind(&cfg, &state).await?;
    let mesh_addr = endpoint.local_addr()?;
    let api_addr = listener.local_addr()?;
    let admin_dir = init::admin_bundle(&cfg, &state, &advertised(&cfg, mesh_addr)).await?;

    let web = web_listener(&cfg).await?;
    let lock = state.lock;
    let (mut ctx, stopped) = context(cfg, Arc::new(state.store), state.ca).await?;
    let web_addr = match &web {
        Some((listener, _)) => Some(listener.local_addr()?),
        None => None,
    };
    ctx.web_url = web_addr.map(|a| web_url(&ctx.cfg, a));
    let ctx = Arc::new(ctx);
    envs::ensure_default(&ctx).await?;
    let mut serving = JoinSet::new();
    serving.spawn(mesh::serve(ctx.clone(), endpoint.clone()));
    serving.spawn(api::serve(ctx.clone(), listener, state.https_tls));
    serving.spawn(registry::monitor(ctx.clone()));
    serving.spawn(tasks::scheduler(ctx.clone()));
    serving.spawn(vps::snapshot_stopped(ctx.clone(), stopped));
    serving.spawn(events::record(ctx.clone(), ctx.events.subscribe()));
    if ctx.overlay.is_some() {
        serving.spawn(overlay::run(ctx.clone()));
    }
    if let Some((listener, tls)) = web {
        tracing::info!(
            url = ctx.web_url.as_deref().unwrap_or(""),
            "the dashboard is served at the host's own address"
        );
        serving.spawn(api::serve_at_own_address(ctx.clone(), listener, tls));
    }
    tracing::info!(%mesh_addr, %api_addr, ca = %hex::encode(ctx.ca_fp), "host is serving");
    Ok(RunningHost {
        mesh_addr,
        api_addr,
        web_addr,
        admin_dir,
        ca_fingerprint: hex::encode(ctx.ca_fp),
        ctx,
        endpoint,
        serving,
        lock,
    })
}

/// The host's shared state over a prepared state directory, without its sockets or loops (tests
/// of the services build it this way too). The receiver is for [`vps::snapshot_stopped`].
async fn context(
    cfg: HostConfig,
    store: Db,
    ca: Ca,
) -> anyhow::Result<(Ctx, tokio::sync::mpsc::UnboundedReceiver<u64>)> {
    let overlay = overlay::Overlay::open(&cfg, store.as_ref()).await?;
    let vps_keys = secrets::HostKeys::open(&cfg.state_dir)?;
    let registry = registry::Registry::default();
    registry.load(&store.nodes().await?);
    let limits = limits::Overrides::load(store.as_ref()).await?;
    let (vps_stopped, stopped) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Ctx {
        ca_fp: ca.fingerprint(),
        ca,
        store,
        registry,
        policy: cfg.liveness(),
        cfg,
        kick: tokio::sync::Notify::new(),
        task_changed: tokio::sync::watch::Sender::new(0),
        fetches: Default::default(),
        udp: Default::default(),
        events: Default::default(),
        usage: Default::default(),
        clock: Default::default(),
        #[cfg(test)]
        meanwhile: Default::default(),
        vps_stopped,
        ops: Default::default(),
        running: Default::default(),
        task_writes: Default::default(),
        user_numbers: Default::default(),
        sessions: Default::default(),
        queued_owners: Default::default(),
        entrances: entrances::Entrances::tcp(),
        anonymous: entrances::Entrances::anonymous(),
        web_entrances: entrances::Entrances::web(),
        overlay,
        vps_keys,
        limits,
        join_failures: Default::default(),
        web_url: None,
    };
    Ok((ctx, stopped))
}

/// The address clients should dial, for the admin credential: the first advertised name, or
/// loopback when the host listens on every address.
fn advertised(cfg: &HostConfig, bound: SocketAddr) -> String {
    match cfg.advertise.first() {
        Some(name) if name.contains(':') && !name.starts_with('[') && name.parse::<std::net::Ipv6Addr>().is_err() => {
            name.clone()
        }
        Some(name) => format!("{name}:{}", bound.port()),
        None if bound.ip().is_unspecified() => format!("127.0.0.1:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// The dashboard's own address and TLS (`[web]`), when configured: the certificate files are
/// read now, so a wrong path or a key that is not the certificate's stops the start with why.
async fn web_listener(
    cfg: &HostConfig,
) -> anyhow::Result<Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>> {
    let (Some(listen), Some(cert), Some(key)) = (cfg.web.listen, &cfg.web.cert, &cfg.web.key) else {
        return Ok(None);
    };
    let tls = river_mesh::lab_server_config(cert, key).context("the dashboard's certificate ([web] cert and key)")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on tcp {listen} for the dashboard ([web] listen)"))?;
    Ok(Some((listener, tls)))
}

/// What login links name: `[web] url`, else `https://` and the host's first advertised name (or
/// the bound address, or this machine's name) with the dashboard's port.
fn web_url(cfg: &HostConfig, bound: SocketAddr) -> String {
    if let Some(url) = &cfg.web.url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = match cfg.advertise.first() {
        Some(a) if a.starts_with('[') => a.split(']').next().map(|h| format!("{h}]")).unwrap_or_default(),
        Some(a) if a.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{a}]"),
        Some(a) => a.split(':').next().unwrap_or(a).to_owned(),
        None if !bound.ip().is_unspecified() => match bound.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into()),
    };
    match bound.port() {
        443 => format!("https://{host}"),
        port => format!("https://{host}:{port}"),
    }
}

/// Binds QUIC on UDP and HTTPS on TCP at the same port. With port 0, retries until a port is free
/// on both.
async fn bind(cfg: &HostConfig, state: &init::State) -> anyhow::Result<(Endpoint, tokio::net::TcpListener)> {
    for _ in 0..20 {
        let endpoint = river_mesh::server_endpoint_with_reset_seed(cfg.listen, state.quic.clone(), &state.reset_seed)
            .with_context(|| format!("cannot listen on udp {} for the mesh", cfg.listen))?;
        let port = endpoint.local_addr()?.port();
        match tokio::net::TcpListener::bind(SocketAddr::new(cfg.listen.ip(), port)).await {
            Ok(l) => return Ok((endpoint, l)),
            Err(e) if cfg.listen.port() != 0 => {
                return Err(e).with_context(|| format!("cannot listen on tcp {} for the HTTPS API", cfg.listen));
            }
            Err(_) => endpoint.close(river_mesh::close::DONE, b""),
        }
    }
    anyhow::bail!("no port free on both UDP and TCP at {}", cfg.listen.ip())
}
