//! Cgroups for `--no-container` tasks: one per task, holding its cores (cpuset), memory limit
//! (no swap beyond it) and a freezer, on cgroup v2 or on the v1 hierarchies (`cpuset`, `memory`,
//! `freezer`). Everything the task forks stays inside, so limits, OOM accounting, pause and kill
//! reach all of it.

use std::io;
use std::path::{Path, PathBuf};

/// The parent of every task cgroup river makes.
const PARENT: &str = "river";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The node's cgroup filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    root: PathBuf,
    version: Version,
}

/// One task's cgroup (one directory on v2, one per controller on v1).
#[derive(Debug, Clone)]
pub(crate) struct Cgroup {
    version: Version,
    /// v2: the directory. v1: cpuset, memory and freezer, in that order.
    dirs: Vec<PathBuf>,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default().trim().to_owned()
}

fn write(p: &Path, value: &str) -> io::Result<()> {
    std::fs::write(p, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

/// A `key value` line of a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Cgroups {
    /// v2 when `root` holds the unified hierarchy, v1 otherwise.
    pub fn at(root: &Path) -> Self {
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        };
        Self {
            root: root.to_owned(),
            version,
        }
    }

    pub fn task(&self, name: &str) -> Cgroup {
        let dirs = match self.version {
            Version::V2 => vec![self.root.join(PARENT).join(name)],
            Version::V1 => ["cpuset", "memory", "freezer"]
                .iter()
                .map(|c| self.root.join(c).join(PARENT).join(name))
                .collect(),
        };
        Cgroup {
            version: self.version,
            dirs,
        }
    }

    /// Names of the task cgroups that exist and start with `prefix`.
    pub fn existing(&self, prefix: &str) -> Vec<String> {
        let parent = match self.version {
            Version::V2 => self.root.join(PARENT),
            Version::V1 => self.root.join("freezer").join(PARENT),
        };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// Makes the parent cgroups usable: controllers delegated (v2), cpus and mems inherited (v1
    /// cpuset starts empty).
    fn prepare(&self) -> io::Result<()> {
        match self.version {
            Version::V2 => {
                let parent = self.root.join(PARENT);
                std::fs::create_dir_all(&parent)?;
                for dir in [&self.root, &parent] {
                    for c in ["+cpuset", "+memory"] {
                        // Already on, or not available here: the limits below say which.
                        let _ = write(&dir.join("cgroup.subtree_control"), c);
                    }
                }
            }
            Version::V1 => {
                for c in ["cpuset", "memory", "freezer"] {
                    std::fs::create_dir_all(self.root.join(c).join(PARENT))?;
                }
                let top = self.root.join("cpuset");
                let parent = top.join(PARENT);
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    if read(&parent.join(f)).is_empty() {
                        write(&parent.join(f), &read(&top.join(f)))?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Cgroup {
    /// Creates the cgroup with its limits. `mems` empty: the memory nodes of the parent.
    pub fn create(&self, groups: &Cgroups, cpus: &str, mems: &str, memory: Option<u64>) -> io::Result<()> {
        groups.prepare()?;
        for d in &self.dirs {
            std::fs::create_dir_all(d)?;
        }
        let (cpuset, mem) = match self.version {
            Version::V2 => (&self.dirs[0], &self.dirs[0]),
            Version::V1 => (&self.dirs[0], &self.dirs[1]),
        };
        write(&cpuset.join("cpuset.cpus"), cpus)?;
        let mems = if mems.is_empty() {
            let parent = cpuset.parent().map(|p| p.join("cpuset.mems")).unwrap_or_default();
            let inherited = read(&parent);
            if inherited.is_empty() {
                read(&groups.root.join("cpuset").join("cpuset.mems"))
            } else {
                inherited
            }
        } else {
            mems.to_owned()
        };
        if !mems.is_empty() {
            write(&cpuset.join("cpuset.mems"), &mems)?;
        }
        if let Some(bytes) = memory {
            let bytes = bytes.to_string();
            match self.version {
                Version::V2 => {
                    write(&mem.join("memory.max"), &bytes)?;
                    let swap = mem.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                Version::V1 => {
                    write(&mem.join("memory.limit_in_bytes"), &bytes)?;
                    let memsw = mem.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        self.dirs.iter().all(|d| d.is_dir())
    }

    /// The `cgroup.procs` files a process writes its pid to, to enter the cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The `cgroup.procs` files opened for writing, so a child can enter the cgroup between fork
    /// and exec without opening anything itself.
    pub fn open_procs(&self) -> std::io::Result<Vec<std::fs::File>> {
        self.procs_files()
            .iter()
            .map(|f| std::fs::OpenOptions::new().write(true).open(f))
            .collect()
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        // On v1 the freezer holds everything the task forked, like the others.
        let dir = self.dirs.last().expect("a cgroup has a directory");
        read(&dir.join("cgroup.procs"))
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// How many times the kernel killed a process of the cgroup for exceeding its memory.
    pub fn oom_kills(&self) -> u64 {
        match self.version {
            Version::V2 => keyed(&read(&self.dirs[0].join("memory.events")), "oom_kill").unwrap_or(0),
            Version::V1 => keyed(&read(&self.dirs[1].join("memory.oom_control")), "oom_kill").unwrap_or(0),
        }
    }

    pub fn freeze(&self, frozen: bool) -> io::Result<()> {
        match self.version {
            Version::V2 => write(&self.dirs[0].join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            Version::V1 => write(
                &self.dirs[2].join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
        }
    }

    pub fn frozen(&self) -> bool {
        match self.version {
            Version::V2 => keyed(&read(&self.dirs[0].join("cgroup.events")), "frozen") == Some(1),
            Version::V1 => read(&self.dirs[2].join("freezer.state")) == "FROZEN",
        }
    }

    /// Kills every process in the cgroup: frozen first, so nothing forks while it is emptied.
    pub fn kill_all(&self) {
        let _ = self.freeze(true);
        for pid in self.pids() {
            crate::process::signal(pid, libc::SIGKILL);
        }
        // Frozen processes die once thawed.
        let _ = self.freeze(false);
    }

    /// Removes the cgroup; it must be empty.
    pub fn remove(&self) -> io::Result<()> {
        for d in &self.dirs {
            match std::fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v1 root: the kernel's files are plain files here.
    fn v1_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for c in ["cpuset", "memory", "freezer"] {
            std::fs::create_dir_all(d.path().join(c)).unwrap();
        }
        std::fs::write(d.path().join("cpuset/cpuset.cpus"), "0-7\n").unwrap();
        std::fs::write(d.path().join("cpuset/cpuset.mems"), "0-1\n").unwrap();
        d
    }

    #[test]
    fn v1_limits_go_to_each_controller_and_parents_inherit_cpus() {
        let d = v1_root();
        let groups = Cgroups::at(d.path());
        assert_eq!(groups.version, Version::V1);
        let cg = groups.task("c-n-task-7");
        // The kernel would make this file; with it present, swap is capped too.
        std::fs::create_dir_all(d.path().join("memory/river/c-n-task-7")).unwrap();
        std::fs::write(d.path().join("memory/river/c-n-task-7/memory.memsw.limit_in_bytes"), "").unwrap();
        cg.create(&groups, "2,3", "", Some(1 << 20)).unwrap();
        assert_eq!(read(&d.path().join("cpuset/river/cpuset.cpus")), "0-7");
        assert_eq!(read(&d.path().join("cpuset/river/c-n-task-7/cpuset.cpus")), "2,3");
        assert_eq!(read(&d.path().join("cpuset/river/c-n-task-7/cpuset.mems")), "0-1");
        let mem = d.path().join("memory/river/c-n-task-7");
        assert_eq!(read(&mem.join("memory.limit_in_bytes")), "1048576");
        assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "1048576");
        assert_eq!(cg.procs_files().len(), 3);
        assert_eq!(groups.existing("c-n-task-"), vec!["c-n-task-7".to_string()]);
        assert!(groups.existing("other-").is_empty());

        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 2);
        cg.freeze(true).unwrap();
        assert!(cg.frozen());
        std::fs::write(d.path().join("freezer/river/c-n-task-7/cgroup.procs"), "12\n13\n").unwrap();
        assert_eq!(cg.pids(), [12, 13]);
    }

    #[test]
    fn v2_uses_one_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset memory\n").unwrap();
        let groups = Cgroups::at(d.path());
        let cg = groups.task("t");
        cg.create(&groups, "1", "0", Some(4096)).unwrap();
        let dir = d.path().join("river/t");
        assert_eq!(read(&dir.join("cpuset.cpus")), "1");
        assert_eq!(read(&dir.join("cpuset.mems")), "0");
        assert_eq!(read(&dir.join("memory.max")), "4096");
        std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(cg.oom_kills(), 1);
        cg.freeze(true).unwrap();
        assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    }
}
