//! Runner configuration: a TOML file, every field optional.

use river_inventory::FakeGpu;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Where the node's identity (key 0600, certificate, CA) and local records live.
    pub state_dir: PathBuf,
    /// The node's name in the cluster; the hostname when unset.
    pub name: Option<String>,
    /// GPUs to report instead of asking NVML, for machines without GPUs (tests, demos).
    pub fake_gpus: Vec<FakeGpu>,
    /// The Docker engine's socket; the default socket when unset.
    pub docker_socket: Option<PathBuf>,
    /// A directory shared by the cluster's nodes (NFS, say), mounted in every task at `/shared`.
    pub shared_dir: Option<PathBuf>,
    /// Node-local scratch space, mounted in every task at `/local_temp`; `state_dir/scratch` when
    /// unset.
    pub scratch_dir: Option<PathBuf>,
    /// Directories of this node that tasks may mount with `--mount`, besides the shared and scratch
    /// directories. Anything else is refused: a mount of `/` would hand the node to the task.
    pub allowed_mounts: Vec<PathBuf>,
    /// `--no-container` tasks run as their owner: the node's account of the same name (uid from
    /// 1000 to 59999), else uid and gid `task_uid_base` + the user's number in the cluster.
    pub task_uid_base: u32,
    /// The cgroup filesystem `--no-container` tasks are confined with.
    pub cgroup_root: PathBuf,
    /// How long the node keeps a finished task's output once the host has stored how it ended;
    /// then it is removed (`task logs` says so). `0s` keeps everything.
    #[serde(with = "humantime_serde")]
    pub task_retention: std::time::Duration,
    /// The most the node keeps of each output stream of a task (`512M`, `2G`): past it, the
    /// oldest part is dropped and `task logs` starts with a line saying how much. `0`: no limit.
    pub task_output_limit: String,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/river/runner".into(),
            name: None,
            fake_gpus: Vec::new(),
            docker_socket: None,
            shared_dir: None,
            scratch_dir: None,
            allowed_mounts: Vec::new(),
            task_uid_base: 2_000_000_000,
            cgroup_root: "/sys/fs/cgroup".into(),
            task_retention: std::time::Duration::from_secs(30 * 86_400),
            task_output_limit: "1G".into(),
        }
    }
}

impl RunnerConfig {
    /// `task_output_limit` in bytes; `None`: no limit.
    pub fn output_cap(&self) -> anyhow::Result<Option<u64>> {
        let bytes =
            river_task::size::parse(&self.task_output_limit).map_err(|e| anyhow::anyhow!("task_output_limit: {e}"))?;
        anyhow::ensure!(
            bytes == 0 || bytes >= 1 << 20,
            "task_output_limit must be at least 1M (or 0 for no limit)"
        );
        Ok((bytes > 0).then_some(bytes))
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_gpus_from_toml() {
        let c: RunnerConfig = toml::from_str(
            "name = \"gpu-01\"\n[[fake_gpus]]\nname = \"Fake H100\"\nmemory_bytes = 85899345920\nnuma = 0\n",
        )
        .unwrap();
        assert_eq!(c.fake_gpus.len(), 1);
        assert_eq!(c.name.as_deref(), Some("gpu-01"));
        assert!(toml::from_str::<RunnerConfig>("nmae = \"x\"").is_err());
    }
}
