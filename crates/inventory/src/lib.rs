//! What a node has and how busy it is: cores, memory and NUMA topology from sysfs and procfs, GPUs
//! from NVML.
//!
//! Architecture invariant: the only crate that knows nvml-wrapper. A machine without the NVIDIA
//! library has no GPUs, which is not an error. The parsers are pure functions over file contents,
//! tested with fixtures; the readers around them are thin.

mod gpu;
pub mod parse;

use river_proto::msg::{Gpu, NodeInfo, NodeUsage, NumaNode};
use std::path::{Path, PathBuf};

pub use gpu::{FakeGpu, GpuSource};

/// Where to read the machine from: the real root, or a fixture tree in tests.
#[derive(Debug, Clone)]
pub struct Inventory {
    sys: PathBuf,
    proc_: PathBuf,
    gpus: GpuSource,
    last_cpu: Option<parse::CpuTimes>,
}

impl Inventory {
    pub fn new(gpus: GpuSource) -> Self {
        Self {
            sys: "/sys".into(),
            proc_: "/proc".into(),
            gpus,
            last_cpu: None,
        }
    }

    /// Reads from another root (tests).
    pub fn with_roots(sys: &Path, proc_: &Path, gpus: GpuSource) -> Self {
        Self {
            sys: sys.into(),
            proc_: proc_.into(),
            gpus,
            last_cpu: None,
        }
    }

    fn read(&self, base: &Path, rel: &str) -> Option<String> {
        std::fs::read_to_string(base.join(rel)).ok()
    }

    /// The static description sent when a runner joins and at each session start.
    pub fn info(&self, hostname: &str) -> NodeInfo {
        let memory_bytes = self
            .read(&self.proc_, "meminfo")
            .and_then(|m| parse::meminfo(&m).total)
            .unwrap_or(0);
        let online = self
            .read(&self.sys, "devices/system/cpu/online")
            .and_then(|s| parse::cpulist(&s))
            .unwrap_or_default();
        let cores = if online.is_empty() {
            std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        } else {
            u32::try_from(online.len()).unwrap_or(u32::MAX)
        };
        NodeInfo {
            hostname: hostname.to_owned(),
            cores,
            memory_bytes,
            numa: self.numa(),
            gpus: self.gpus.list(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // The runner knows; the machine does not.
            no_engine: false,
        }
    }

    fn numa(&self) -> Vec<NumaNode> {
        let dir = self.sys.join("devices/system/node");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut nodes: Vec<NumaNode> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id: u32 = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
                let cpus = std::fs::read_to_string(e.path().join("cpulist"))
                    .ok()
                    .and_then(|s| parse::cpulist(&s))?;
                let memory_bytes = std::fs::read_to_string(e.path().join("meminfo"))
                    .ok()
                    .and_then(|m| parse::numa_meminfo(&m))
                    .unwrap_or(0);
                Some(NumaNode { id, cpus, memory_bytes })
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        nodes
    }

    /// Live figures for a heartbeat. CPU use is measured between two calls, so the first call
    /// reports 0%.
    pub fn usage(&mut self) -> NodeUsage {
        let mem = self
            .read(&self.proc_, "meminfo")
            .map(|m| parse::meminfo(&m))
            .unwrap_or_default();
        let cpu = self.read(&self.proc_, "stat").and_then(|s| parse::cpu_times(&s));
        let cpu_percent = match (self.last_cpu, cpu) {
            (Some(a), Some(b)) => parse::cpu_percent(a, b),
            _ => 0.0,
        };
        self.last_cpu = cpu;
        NodeUsage {
            cpu_percent,
            memory_used_bytes: mem.total.unwrap_or(0).saturating_sub(mem.available.unwrap_or(0)),
            gpus: self.gpus.usage(),
            no_engine: false,
        }
    }

    pub fn gpus(&self) -> Vec<Gpu> {
        self.gpus.list()
    }
}

/// This machine's hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_two_socket_fixture() {
        let root = tempfile_dir();
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("sys/devices/system/cpu/online", "0-7\n");
        w("sys/devices/system/node/node0/cpulist", "0-3\n");
        w(
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal:       16384 kB\n",
        );
        w("sys/devices/system/node/node1/cpulist", "4-7\n");
        w(
            "sys/devices/system/node/node1/meminfo",
            "Node 1 MemTotal:       16384 kB\n",
        );
        w("sys/devices/system/node/possible", "0-1\n");
        w(
            "proc/meminfo",
            "MemTotal:       32768 kB\nMemFree: 1 kB\nMemAvailable:   16384 kB\n",
        );
        w("proc/stat", "cpu  100 0 100 800 0 0 0 0 0 0\n");
        let fake = GpuSource::Fake(vec![FakeGpu {
            name: "Fake A100".into(),
            memory_bytes: 80 << 30,
            numa: Some(1),
        }]);
        let mut inv = Inventory::with_roots(&root.join("sys"), &root.join("proc"), fake);
        let info = inv.info("n1");
        assert_eq!(info.cores, 8);
        assert_eq!(info.memory_bytes, 32768 * 1024);
        assert_eq!(info.numa.len(), 2);
        assert_eq!(info.numa[1].cpus, vec![4, 5, 6, 7]);
        assert_eq!(info.numa[1].memory_bytes, 16384 * 1024);
        assert_eq!(info.gpus.len(), 1);
        assert_eq!(info.gpus[0].numa, Some(1));
        let u = inv.usage();
        assert_eq!(u.memory_used_bytes, 16384 * 1024);
        w("proc/stat", "cpu  200 0 200 900 0 0 0 0 0 0\n");
        let u = inv.usage();
        assert!((u.cpu_percent - 66.666).abs() < 0.1, "{}", u.cpu_percent);
        std::fs::remove_dir_all(root).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "river-inv-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn this_machine_is_readable() {
        let mut inv = Inventory::new(GpuSource::None);
        let info = inv.info(&hostname());
        assert!(info.cores >= 1);
        assert!(info.memory_bytes > 0);
        let _ = inv.usage();
    }
}
