//! The node's directories that tasks write into (scratch, the shared directory, allowed mounts)
//! are `nosuid,nodev` mounts on the node itself, and so is every bind of them into a container:
//! a setuid binary a container's root plants there gives nobody root — not a task, and not the
//! same person logged in to the node outside river.
//!
//! A directory that is not a mount point already becomes one (bound onto itself); the runner
//! undoes the mounts it made when it stops. Needs root; a runner that is not root runs no task
//! as anyone else and changes nothing.

use std::path::{Path, PathBuf};

/// Mounts this runner made, undone when it is dropped.
#[derive(Debug, Default)]
pub(crate) struct Sealed {
    made: Vec<PathBuf>,
}

impl Drop for Sealed {
    fn drop(&mut self) {
        for dir in self.made.drain(..) {
            // Lazily: containers that still use a bind of it keep their own copy of the mount.
            if let Err(e) = mount(&["-l"], &dir, "umount") {
                tracing::warn!("unmounting {}: {e}", dir.display());
            }
        }
    }
}

/// `\NNN` octal escapes of `/proc/self/mountinfo` undone.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The per-mount options of the last mount on `dir` (the one a path lookup sees), if `dir` is a
/// mount point.
fn mount_options(mountinfo: &str, dir: &Path) -> Option<Vec<String>> {
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 5 && Path::new(&unescape(f[4])) == dir).then(|| f[5].split(',').map(str::to_owned).collect())
    })
}

fn mount(args: &[&str], dir: &Path, program: &str) -> Result<(), String> {
    // Absolute paths, a fixed environment: nothing of a user's reaches a command run as root.
    let bin = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
        .ok_or_else(|| format!("no {program} command on this node (util-linux)"))?;
    let out = std::process::Command::new(&bin)
        .args(args)
        .arg(dir)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Makes each of `dirs` that exists a `nosuid,nodev` mount.
pub(crate) fn seal(dirs: &[PathBuf]) -> Result<Sealed, String> {
    let mut sealed = Sealed::default();
    if !crate::process::running_as_root() {
        return Ok(sealed);
    }
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("mountinfo: {e}"))?;
        let fail = |e: String| format!("could not make {} nosuid,nodev: {e}", dir.display());
        match mount_options(&info, &dir) {
            Some(o) if o.iter().any(|x| x == "nosuid") && o.iter().any(|x| x == "nodev") => continue,
            Some(_) => {}
            None => {
                let source = dir.to_string_lossy();
                mount(&["--bind", &source], &dir, "mount").map_err(fail)?;
                sealed.made.push(dir.clone());
            }
        }
        mount(&["-o", "remount,bind,nosuid,nodev"], &dir, "mount").map_err(fail)?;
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        40 22 8:1 /srv/a\\040b /srv/a\\040b rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
        41 40 8:1 /srv/a\\040b /srv/a\\040b rw,nosuid,nodev,relatime shared:1 - ext4 /dev/sda1 rw\n";

    #[test]
    fn the_last_mount_on_a_directory_counts() {
        let o = mount_options(INFO, Path::new("/srv/a b")).unwrap();
        assert!(
            o.contains(&"nosuid".to_owned()) && o.contains(&"nodev".to_owned()),
            "{o:?}"
        );
        assert_eq!(mount_options(INFO, Path::new("/srv")), None);
        assert_eq!(mount_options(INFO, Path::new("/")).unwrap()[0], "rw");
    }
}
