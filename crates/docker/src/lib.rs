//! The container runtime: a narrow interface over the node's Docker engine (bollard).
//!
//! Architecture invariant: the only crate that knows bollard or the Docker API. Runners ask it to
//! create, start, wait for, signal and list containers in river's terms (cores, memory, GPUs,
//! mounts, labels) and get river's terms back (an exit code and whether the kernel killed the
//! container for memory, read from the engine's state rather than guessed from exit code 137).

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount as DockerMount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no Docker engine at {socket} ({reason}); is dockerd running, and may this user use its socket?")]
    Unavailable { socket: String, reason: String },
    #[error("image {0} is not on this node")]
    NoImage(String),
    #[error("image {image} is not on this node and pulling it failed ({reason}); load it with `docker load`, or use one the node has")]
    PullFailed { image: String, reason: String },
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The engine refused because of what it has now (a container of that name exists).
    #[error("docker: {0}")]
    Conflict(String),
    #[error("docker: {0}")]
    Docker(String),
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn docker_err(e: bollard::errors::Error) -> RuntimeError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => RuntimeError::Conflict(message),
        other => RuntimeError::Docker(other.to_string()),
    }
}

/// `repo:tag` split at the tag's colon (not a registry port's); no tag means `latest`.
fn split_ref(image: &str) -> (&str, &str) {
    match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((n, t)) => (n, t),
        None => (image, "latest"),
    }
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Everything a container is created with, in river's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// Cores to pin to, in cpuset syntax (`0-3,8`).
    pub cpuset_cpus: Option<String>,
    /// NUMA nodes whose memory to use, in cpuset syntax.
    pub cpuset_mems: Option<String>,
    /// Memory limit; swap is limited to the same figure (no swap beyond it).
    pub memory_bytes: Option<u64>,
    /// GPU indices or UUIDs, passed to the NVIDIA runtime as a device request.
    pub gpus: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Labels that let the runner find its containers again after a restart.
    pub labels: BTreeMap<String, String>,
    pub privileged: bool,
    /// A network to attach to instead of the engine's default, with a fixed IPv4 address or one
    /// the engine picks.
    pub network: Option<(String, Option<String>)>,
}

/// A bridge network the engine should have: its name, the existing Linux bridge it sits on,
/// subnet and gateway, and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub mtu: u32,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i64,
    /// The kernel killed it for exceeding its memory limit (the engine's `OOMKilled`).
    pub oom_killed: bool,
}

/// What the engine says about a container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub running: bool,
    pub paused: bool,
    /// Set once it has stopped.
    pub exit: Option<Exit>,
    pub labels: BTreeMap<String, String>,
    /// The id of the image it was made from.
    pub image: Option<String>,
}

/// A container found by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Runtime {
    docker: Docker,
}

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

impl Runtime {
    /// Connects to the engine at `socket` (the default socket when `None`) and checks it answers.
    pub async fn connect(socket: Option<&Path>) -> Result<Self> {
        // Docker's own clients honour DOCKER_HOST (`unix:///path`); so does river.
        let from_env = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_owned));
        let path = socket.map_or_else(
            || from_env.unwrap_or_else(|| DEFAULT_SOCKET.to_owned()),
            |p| p.display().to_string(),
        );
        let unavailable = |reason: String| RuntimeError::Unavailable {
            socket: path.clone(),
            reason,
        };
        let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unavailable(e.to_string()))?;
        // Speak the engine's API version, whatever Docker release the node has.
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        docker.ping().await.map_err(|e| unavailable(e.to_string()))?;
        Ok(Self { docker })
    }

    /// Whether the engine answers now.
    pub async fn ping(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    pub async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.inspect_image(image).await?.is_some())
    }

    /// What the engine knows of `image` (an id or a name); `None` when it has no such image.
    async fn inspect_image(&self, image: &str) -> Result<Option<bollard::models::ImageInspect>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(i)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Creates (does not start) a container; returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        if !self.image_present(&spec.image).await? {
            self.pull(&spec.image).await?;
        }
        let memory = spec.memory_bytes.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
        let host = HostConfig {
            cpuset_cpus: spec.cpuset_cpus.clone(),
            cpuset_mems: spec.cpuset_mems.clone(),
            memory,
            memory_swap: memory,
            privileged: Some(spec.privileged),
            // No exec in the container gains privileges it did not have: a setuid binary,
            // planted wherever, runs as whoever started it.
            security_opt: (!spec.privileged).then(|| vec!["no-new-privileges:true".to_owned()]),
            // No raw or packet sockets: a container cannot forge another's source address (or
            // answer ARP for it), which is what the overlay's reach filter trusts. `ping` from
            // iputils still works through the unprivileged ICMP sockets the engine allows.
            cap_drop: (!spec.privileged).then(|| vec!["NET_RAW".to_owned()]),
            // A tiny init reaps zombies and forwards signals, so `kill` reaches the task.
            init: Some(true),
            mounts: Some(
                spec.mounts
                    .iter()
                    .map(|m| DockerMount {
                        source: Some(m.source.display().to_string()),
                        target: Some(m.target.clone()),
                        typ: Some(MountType::BIND),
                        read_only: Some(m.read_only),
                        ..Default::default()
                    })
                    .collect(),
            ),
            device_requests: (!spec.gpus.is_empty()).then(|| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    device_ids: Some(spec.gpus.clone()),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.clone()),
            working_dir: spec.workdir.clone(),
            labels: Some(
                spec.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            host_config: Some(HostConfig {
                network_mode: spec.network.as_ref().map(|(n, _)| n.clone()),
                ..host
            }),
            networking_config: spec
                .network
                .as_ref()
                .map(|(name, ip)| bollard::models::NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        name.clone(),
                        bollard::models::EndpointSettings {
                            ipam_config: ip.as_ref().map(|ip| bollard::models::EndpointIpamConfig {
                                ipv4_address: Some(ip.clone()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )])),
                }),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        Ok(self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(docker_err)?
            .id)
    }

    /// Makes sure the engine has `net`: created if missing; recreated if it differs and no
    /// container uses it; an error saying so if containers hold the old one. Returns whether it
    /// was created.
    pub async fn ensure_network(&self, net: &BridgeNetwork) -> Result<bool> {
        let options = HashMap::from([
            ("com.docker.network.bridge.name".to_owned(), net.bridge.clone()),
            ("com.docker.network.driver.mtu".to_owned(), net.mtu.to_string()),
            // The node masquerades only traffic leaving the overlay (river's own rule):
            // between containers, addresses are kept.
            (
                "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                "false".to_owned(),
            ),
        ]);
        match self.docker.inspect_network(&net.name, None).await {
            Ok(have) => {
                let cfg = have.ipam.and_then(|i| i.config).unwrap_or_default();
                let same_subnet = cfg.iter().any(|c| c.subnet.as_deref() == Some(net.subnet.as_str()));
                let same_bridge = have
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.bridge.name"))
                    == Some(&net.bridge);
                let same_mtu = have
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.driver.mtu"))
                    == Some(&net.mtu.to_string());
                if same_subnet && same_bridge && same_mtu {
                    return Ok(false);
                }
                if have.containers.is_some_and(|c| !c.is_empty()) {
                    return Err(RuntimeError::Docker(format!(
                        "network {} has other settings than the overlay needs ({}) and containers still use it",
                        net.name, net.subnet
                    )));
                }
                self.docker.remove_network(&net.name).await.map_err(docker_err)?;
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(docker_err(e)),
        }
        let req = bollard::models::NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(net.subnet.clone()),
                    gateway: Some(net.gateway.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(options),
            ..Default::default()
        };
        self.docker.create_network(req).await.map_err(docker_err)?;
        Ok(true)
    }

    /// Makes sure the bridge network `name` exists with traffic between its containers off
    /// (`enable_icc=false`), and returns its id, by which containers join it. The engine accepts
    /// two networks of one name made at the same moment (by two processes sharing it), and then
    /// refuses every container that names it as ambiguous: every caller settles on the one with
    /// the smallest id and removes the others when nothing uses them.
    pub async fn ensure_isolated_network(&self, name: &str) -> Result<String> {
        const ICC: &str = "com.docker.network.bridge.enable_icc";
        // Runners sharing an engine in one process make it one at a time.
        static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = MAKING.lock().await;
        let mut found = self.networks_named(name).await?;
        if found.is_empty() {
            let req = bollard::models::NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                options: Some(HashMap::from([(ICC.to_owned(), "false".to_owned())])),
                ..Default::default()
            };
            self.docker.create_network(req).await.map_err(docker_err)?;
            found = self.networks_named(name).await?;
        }
        found.sort();
        // The one to keep: one that containers use already (the engine stores a container's
        // network by name, so it could not start again while the name is ambiguous, and a network
        // in use cannot be removed), else the smallest id, which every caller agrees on.
        let mut keep = None;
        if found.len() > 1 {
            for id in &found {
                let used = self
                    .docker
                    .inspect_network(id, None)
                    .await
                    .ok()
                    .and_then(|n| n.containers)
                    .is_some_and(|c| !c.is_empty());
                if used {
                    keep = Some(id.clone());
                    break;
                }
            }
        }
        let Some(keep) = keep.or_else(|| found.first().cloned()) else {
            return Err(RuntimeError::Docker(format!(
                "network {name} was made but is not there"
            )));
        };
        for other in found.iter().filter(|id| **id != keep) {
            // Refused while a container uses it; a later call tries again.
            let _ = self.docker.remove_network(other).await;
        }
        let have = self.docker.inspect_network(&keep, None).await.map_err(docker_err)?;
        let icc = have.options.as_ref().and_then(|o| o.get(ICC)).map(String::as_str);
        if icc != Some("false") {
            return Err(RuntimeError::Docker(format!(
                "network {name} lets containers reach each other; remove it (`docker network rm {name}`) and river makes it again"
            )));
        }
        Ok(keep)
    }

    /// The ids of the networks named exactly `name`.
    async fn networks_named(&self, name: &str) -> Result<Vec<String>> {
        let opts = bollard::query_parameters::ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
        };
        let list = self.docker.list_networks(Some(opts)).await.map_err(docker_err)?;
        Ok(list
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect())
    }

    /// Pulls an image from its registry, for nodes that can reach one.
    pub async fn pull(&self, image: &str) -> Result<()> {
        let (name, tag) = split_ref(image);
        let opts = bollard::query_parameters::CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(opts), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(RuntimeError::PullFailed {
                    image: image.to_owned(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(docker_err)
    }

    /// Waits until the container stops; its exit code and OOM flag come from the engine's state.
    pub async fn wait(&self, id: &str) -> Result<Exit> {
        let mut s = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        // bollard reports a non-zero exit as an error item; either way the state below is the truth.
        while let Some(item) = s.next().await {
            if let Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) = item {
                return Err(docker_err(e));
            }
        }
        self.status(id)
            .await?
            .exit
            .ok_or_else(|| RuntimeError::Docker(format!("container {id} stopped without an exit code")))
    }

    pub async fn status(&self, id: &str) -> Result<Status> {
        let c = self
            .docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(docker_err)?;
        let st = c.state.unwrap_or_default();
        let running = st.running.unwrap_or(false);
        let exit = (!running).then(|| Exit {
            code: st.exit_code.unwrap_or(-1),
            oom_killed: st.oom_killed.unwrap_or(false),
        });
        let started = st.started_at.as_deref().is_some_and(|t| !t.starts_with("0001-"));
        Ok(Status {
            running,
            paused: st.paused.unwrap_or(false),
            exit: exit.filter(|_| started),
            labels: c
                .config
                .and_then(|c| c.labels)
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
            image: c.image,
        })
    }

    pub async fn kill(&self, id: &str) -> Result<()> {
        self.docker
            .kill_container(id, Some(KillContainerOptions { signal: "KILL".into() }))
            .await
            .map_err(docker_err)
    }

    /// Stops a container the way `docker stop` does: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, id: &str, grace: std::time::Duration) -> Result<()> {
        let opts = bollard::query_parameters::StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(id, Some(opts)).await {
            // 304: it was not running.
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Gives a (stopped or running) container new cores and memory.
    pub async fn update_limits(
        &self,
        id: &str,
        cpuset_cpus: Option<String>,
        cpuset_mems: Option<String>,
        memory_bytes: Option<u64>,
    ) -> Result<()> {
        let memory = memory_bytes.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
        let body = bollard::models::ContainerUpdateBody {
            cpuset_cpus,
            cpuset_mems,
            // No limit is 0 to the engine; swap follows memory as at creation (-1: unlimited).
            memory: Some(memory.unwrap_or(0)),
            memory_swap: Some(memory.unwrap_or(-1)),
            ..Default::default()
        };
        self.docker.update_container(id, body).await.map_err(docker_err)
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        self.docker.pause_container(id).await.map_err(docker_err)
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        self.docker.unpause_container(id).await.map_err(docker_err)
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Every container (running or not) carrying `label` (`key` or `key=value`).
    pub async fn list(&self, label: &str) -> Result<Vec<Found>> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self.docker.list_containers(Some(opts)).await.map_err(docker_err)?;
        Ok(list
            .into_iter()
            .map(|c| Found {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    /// The labels of `image`'s configuration; none when there is no such image.
    pub async fn image_labels(&self, image: &str) -> Result<HashMap<String, String>> {
        Ok(self
            .inspect_image(image)
            .await?
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .unwrap_or_default())
    }

    /// The image's id (`sha256:…`), or `None` if the engine does not have it.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>> {
        Ok(self.inspect_image(image).await?.and_then(|i| i.id))
    }

    /// The image's size as the engine reports it (its layers, uncompressed): about the size of
    /// its `docker save` archive.
    pub async fn image_size(&self, image: &str) -> Result<Option<u64>> {
        Ok(self
            .inspect_image(image)
            .await?
            .and_then(|i| i.size)
            .and_then(|s| u64::try_from(s).ok()))
    }

    /// The names (`repo:tag`) `image` carries; none when there is no such image.
    pub async fn image_tags(&self, image: &str) -> Result<Vec<String>> {
        Ok(self
            .inspect_image(image)
            .await?
            .and_then(|i| i.repo_tags)
            .unwrap_or_default())
    }

    /// Takes the name `tag` off its image; the image goes with its last name. Not forced: the last
    /// name of an image some container (running or not) was made from stays, without an error.
    pub async fn untag(&self, tag: &str) -> Result<()> {
        let opts = bollard::query_parameters::RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self.docker.remove_image(tag, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409, ..
            }) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Gives `image` the name `tag` (`repo:tag`).
    pub async fn tag(&self, image: &str, tag: &str) -> Result<()> {
        let (repo, t) = split_ref(tag);
        let opts = bollard::query_parameters::TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(t.to_owned()),
        };
        self.docker.tag_image(image, Some(opts)).await.map_err(docker_err)
    }

    /// Saves a container's filesystem as the image `tag`, keeping the command and entrypoint of
    /// the image it was started from (not the command it happens to run). Returns the image id.
    pub async fn commit(&self, container: &str, tag: &str) -> Result<String> {
        let c = self
            .docker
            .inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(docker_err)?;
        let base = match c.image.as_deref() {
            Some(image) => self.docker.inspect_image(image).await.ok().and_then(|i| i.config),
            None => None,
        };
        let (repo, t) = split_ref(tag);
        let opts = bollard::query_parameters::CommitContainerOptions {
            container: Some(container.to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(t.to_owned()),
            pause: true,
            ..Default::default()
        };
        let config = bollard::models::ContainerConfig {
            cmd: base.as_ref().and_then(|b| b.cmd.clone()),
            entrypoint: base.as_ref().and_then(|b| b.entrypoint.clone()),
            // The task's own variables (RIVER_TASK_ID, …) must not become the image's.
            env: base.as_ref().and_then(|b| b.env.clone()),
            ..Default::default()
        };
        let id = self.docker.commit_container(opts, config).await.map_err(docker_err)?.id;
        Ok(id)
    }

    /// The `docker save` archive of one image, as it is produced.
    pub fn save(&self, image: &str) -> impl Stream<Item = Result<bytes::Bytes>> + Send + use<> {
        self.docker.export_image(image).map(|r| r.map_err(docker_err))
    }

    /// Loads a `docker save` archive from a file (`docker load`).
    pub async fn load(&self, archive: &Path) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|e| RuntimeError::Docker(format!("opening {}: {e}", archive.display())))?;
        let body = futures_util::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let opts = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut progress = std::pin::pin!(self.docker.import_image_stream(opts, body, None));
        while let Some(step) = progress.next().await {
            let info = step.map_err(docker_err)?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Docker(format!("loading {}: {e}", archive.display())));
            }
        }
        Ok(())
    }

    /// Removes an image (by id or name), untagging it everywhere.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let opts = bollard::query_parameters::RemoveImageOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_image(image, Some(opts), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// The pid (in the node's namespace) of a running container's first process.
    pub async fn pid(&self, id: &str) -> Result<Option<i64>> {
        let c = self
            .docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(docker_err)?;
        Ok(c.state.and_then(|s| s.pid).filter(|&p| p > 0))
    }

    /// Starts `cmd` in a running container, attached: its input and output are returned.
    pub async fn exec(&self, container: &str, cmd: Vec<String>, tty: bool) -> Result<Exec> {
        let env = if tty {
            vec!["TERM=xterm-256color".to_owned()]
        } else {
            Vec::new()
        };
        self.exec_as(
            container,
            ExecRequest {
                cmd,
                tty,
                env,
                user: None,
                workdir: None,
            },
        )
        .await
    }

    /// Starts a command in a running container as `req` says, attached.
    pub async fn exec_as(&self, container: &str, req: ExecRequest) -> Result<Exec> {
        let tty = req.tty;
        let opts = bollard::exec::CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            cmd: Some(req.cmd),
            env: (!req.env.is_empty()).then_some(req.env),
            user: req.user,
            working_dir: req.workdir,
            ..Default::default()
        };
        let id = self.docker.create_exec(container, opts).await.map_err(docker_err)?.id;
        let started = self
            .docker
            .start_exec(
                &id,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(docker_err)?;
        match started {
            bollard::exec::StartExecResults::Attached { output, input } => Ok(Exec {
                id,
                output: Box::pin(output.filter_map(|item| async move { log_item(item) })),
                input,
            }),
            bollard::exec::StartExecResults::Detached => Err(RuntimeError::Docker("exec started detached".into())),
        }
    }

    pub async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        let opts = bollard::query_parameters::ResizeExecOptions {
            h: i32::from(rows),
            w: i32::from(cols),
        };
        self.docker.resize_exec(id, opts).await.map_err(docker_err)
    }

    /// The process an exec runs, as this machine's pid (the engine reports it outside the
    /// container's pid namespace); `None` once it has ended or when the engine does not say.
    pub async fn exec_pid(&self, id: &str) -> Option<i64> {
        let e = self.docker.inspect_exec(id).await.ok()?;
        if e.running != Some(true) {
            return None;
        }
        e.pid.filter(|p| *p > 0)
    }

    /// The exit code of an exec whose output has ended: the engine may take a moment to record it,
    /// so this waits up to a second; `None` if it is still unknown then.
    pub async fn exec_exit(&self, id: &str) -> Option<i64> {
        for _ in 0..50 {
            match self.docker.inspect_exec(id).await {
                Ok(e) if e.exit_code.is_some() => return e.exit_code,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(_) => return None,
            }
        }
        None
    }

    /// The container's output from the start, as it comes; with `follow`, until it stops.
    pub fn output(&self, id: &str, follow: bool) -> impl Stream<Item = Result<Output>> + Send + use<> {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        self.docker
            .logs(id, Some(opts))
            .filter_map(|item| async move { log_item(item) })
    }
}

fn log_item(
    item: std::result::Result<bollard::container::LogOutput, bollard::errors::Error>,
) -> Option<Result<Output>> {
    match item {
        Ok(bollard::container::LogOutput::StdOut { message } | bollard::container::LogOutput::Console { message }) => {
            Some(Ok(Output::Stdout(message.to_vec())))
        }
        Ok(bollard::container::LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message.to_vec()))),
        Ok(bollard::container::LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(docker_err(e))),
    }
}

/// A command to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub tty: bool,
    /// `NAME=value`, on top of the container's own.
    pub env: Vec<String>,
    /// A user name or uid (the image's default when `None`).
    pub user: Option<String>,
    pub workdir: Option<String>,
}

/// A command started in a container: its id (to resize and to read its exit code), output and
/// input.
pub struct Exec {
    pub id: String,
    pub output: std::pin::Pin<Box<dyn Stream<Item = Result<Output>> + Send>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}
