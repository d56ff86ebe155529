//! How an SFTP session opens files: only regular files (and directories, to read), never a device
//! node, a FIFO or a socket.
//!
//! The session's thread is the runner's, not the container's: the container's device rules (its
//! cgroup) do not bind it, so a device node that root in the container made with `mknod` — the
//! node's disk, say — would open for it although the container itself may not open it. The path
//! is therefore first opened with `O_PATH` (which opens nothing: no device driver is reached),
//! its type checked on that descriptor, and only then is the same file opened for real, through
//! `/proc/thread-self/fd/N` (the descriptor, not the path again, so nothing can be swapped in
//! between). The `/proc` used is the node's, opened before the thread entered the container.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// What a client asked to open a file for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Want {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub truncate: bool,
    /// Make it when missing.
    pub create: bool,
    /// Make it, failing if it exists.
    pub create_new: bool,
    /// Permissions of a file made.
    pub mode: u32,
}

impl Want {
    fn flags(self) -> libc::c_int {
        let access = match (self.read, self.write || self.append) {
            (_, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
        };
        access
            | if self.append { libc::O_APPEND } else { 0 }
            | if self.truncate { libc::O_TRUNC } else { 0 }
            | libc::O_CLOEXEC
    }
}

/// Opens files for one session's thread.
#[derive(Debug)]
pub(crate) struct Opener {
    /// The node's `/proc/thread-self/fd` for this thread.
    fds: File,
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "not a regular file: SFTP opens no devices, FIFOs or sockets",
    )
}

impl Opener {
    /// Made on the session's thread while it still sees the node's `/proc`.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            fds: File::open("/proc/thread-self/fd")?,
        })
    }

    /// Opens `path` as `want` says, if it is a regular file (or a directory, to read).
    pub(super) fn open(&self, path: &Path, want: Want) -> io::Result<File> {
        // Twice at most: a file made by someone else between our look and our make is looked at
        // again.
        for _ in 0..2 {
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(path)
            {
                Ok(probe) => {
                    let kind = probe.metadata()?.file_type();
                    let reading = !(want.write || want.append || want.truncate);
                    if !(kind.is_file() || (kind.is_dir() && reading)) {
                        return Err(refused());
                    }
                    if want.create_new {
                        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                    }
                    return self.reopen(&probe, want);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && (want.create || want.create_new) => {
                    // O_EXCL makes a new regular file or fails: it never opens what is there.
                    match OpenOptions::new()
                        .read(want.read)
                        .write(true)
                        .append(want.append)
                        .create_new(true)
                        .mode(want.mode)
                        .open(path)
                    {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !want.create_new => continue,
                        made => return made,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from(io::ErrorKind::AlreadyExists))
    }

    /// Opens the file `probe` (an `O_PATH` descriptor) refers to, with `want`'s access.
    #[allow(unsafe_code)]
    fn reopen(&self, probe: &File, want: Want) -> io::Result<File> {
        let name = CString::new(probe.as_raw_fd().to_string()).map_err(|_| refused())?;
        // SAFETY: openat(2) reads a NUL-terminated string alive for the call, relative to a
        // directory descriptor we own; it returns a new descriptor or -1.
        let fd = unsafe { libc::openat(self.fds.as_raw_fd(), name.as_ptr(), want.flags()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn regular_files_open_as_asked_and_nothing_else_opens() {
        let d = tempfile::tempdir().unwrap();
        let o = Opener::new().unwrap();
        let f = d.path().join("f");
        let write = Want {
            write: true,
            create: true,
            mode: 0o600,
            ..Want::default()
        };
        o.open(&f, write).unwrap().write_all(b"hello").unwrap();
        let mut s = String::new();
        let read = Want {
            read: true,
            ..Want::default()
        };
        o.open(&f, read).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let trunc = Want {
            write: true,
            truncate: true,
            ..Want::default()
        };
        drop(o.open(&f, trunc).unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 0);
        let excl = Want {
            write: true,
            create_new: true,
            ..Want::default()
        };
        assert_eq!(o.open(&f, excl).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert!(o.open(d.path(), read).is_ok(), "a directory opens to read");
        assert!(o.open(d.path(), trunc).is_err());

        // A FIFO would block an open for reading; a device would reach its driver.
        let fifo = d.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        for (what, path) in [("a FIFO", fifo.as_path()), ("a device", Path::new("/dev/null"))] {
            let e = o.open(path, read).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{what}: {e}");
            let e = o.open(path, write).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{what}: {e}");
        }
    }
}
