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

    /// The pid (in the node's namespace) of a running container's first process.
    pub async fn pid(&self, id: &str) -> Result<Option<i64>> {
        let c = self
            .docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(docker_err)?;
        Ok(c.state.and_then(|s| s.pid).filter(|&p| p > 0))
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

mod exec;
mod images;
mod network;
pub use exec::{Exec, ExecRequest};
