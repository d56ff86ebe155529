//! One process per state directory: a host or runner holds an exclusive lock on `DIR/lock` for
//! as long as it runs. Two hosts on one directory would rewrite each other's credentials and
//! mark each other's tasks lost; two runners would each think the other's containers are theirs.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Held while the directory is in use; dropping it (or the process ending, however it ends)
/// releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another river {role}{pid} is using the state directory {dir}; stop it first, or give this one its own --state-dir")]
    Busy { role: String, pid: String, dir: PathBuf },
    #[error("locking the state directory {dir}: {error}")]
    Io { dir: PathBuf, error: std::io::Error },
}

impl StateLock {
    /// Takes the lock on `dir` (created if missing) for a `role` ("host", "runner"), without
    /// waiting: if another process holds it, says which.
    pub fn acquire(dir: &Path, role: &str) -> Result<Self, LockError> {
        let io = |error| LockError::Io {
            dir: dir.to_owned(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(io)?;
        #[allow(unsafe_code)]
        // SAFETY: flock(2) on a descriptor this function owns for the duration of the call; it
        // reads and writes no memory.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = holder
                .trim()
                .parse::<u32>()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(LockError::Busy {
                role: role.to_owned(),
                pid,
                dir: dir.to_owned(),
            });
        }
        // Who holds it, for the next one's message.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(d.path(), "host").unwrap();
        let e = StateLock::acquire(d.path(), "host").unwrap_err().to_string();
        assert!(
            e.contains("another river host") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        StateLock::acquire(d.path(), "host").unwrap();
    }
}
