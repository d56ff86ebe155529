//! An SFTP server (protocol version 3, what OpenSSH's `sftp` and `scp` speak) for VPSs, so file
//! transfer works with any image, `sftp-server` or not.
//!
//! Each session gets its own OS thread that first leaves the runner's filesystem view: it unshares
//! its filesystem attributes (root, working directory, umask) from the other threads and joins the
//! container's mount namespace, which makes the container's root its `/`. Every path a client
//! sends is then resolved by the kernel inside the container, symlinks included, exactly as for a
//! process running there; nothing the client names can reach the node's files. The thread also
//! takes on the login user's file-system uid and gid (from the container's `/etc/passwd`), so a
//! non-root user's files are theirs and root's files are out of their reach.
//!
//! The thread is the runner's, though, not bound by the container's device rules: it opens
//! only regular files and directories, never a device node the container's root made (`open`).
//!
//! The thread speaks the protocol over one end of a Unix socket pair with plain blocking I/O;
//! the SSH side relays the other end.

mod open;
mod wire;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use wire::{long_name, Attrs, Fields, Reply};

/// The largest request accepted: a 256 KiB write and its header. A bigger length is a broken or
/// hostile client, and ends the session.
const MAX_PACKET: usize = 256 * 1024 + 1024;
/// The most bytes one READ answers with.
const MAX_READ: u32 = 256 * 1024;
/// Open handles per session.
const MAX_HANDLES: usize = 1024;
/// Directory entries per READDIR answer.
const DIR_BATCH: usize = 100;

const INIT: u8 = 1;
const VERSION: u8 = 2;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const LSTAT: u8 = 7;
const FSTAT: u8 = 8;
const SETSTAT: u8 = 9;
const FSETSTAT: u8 = 10;
const OPENDIR: u8 = 11;
const READDIR: u8 = 12;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const REALPATH: u8 = 16;
const STAT: u8 = 17;
const RENAME: u8 = 18;
const READLINK: u8 = 19;
const SYMLINK: u8 = 20;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;
const ATTRS: u8 = 105;
const EXTENDED: u8 = 200;

const OK: u32 = 0;
const EOF: u32 = 1;
const NO_SUCH_FILE: u32 = 2;
const PERMISSION_DENIED: u32 = 3;
const FAILURE: u32 = 4;
const BAD_MESSAGE: u32 = 5;
const UNSUPPORTED: u32 = 8;

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

const OPEN_READ: u32 = 0x1;
const OPEN_WRITE: u32 = 0x2;
const OPEN_APPEND: u32 = 0x4;
const OPEN_CREAT: u32 = 0x8;
const OPEN_TRUNC: u32 = 0x10;
const OPEN_EXCL: u32 = 0x20;

/// Starts an SFTP session inside the container whose first process is `pid`, as `user`; the
/// returned socket carries the protocol.
pub(crate) fn start(pid: i64, user: Option<String>) -> io::Result<tokio::net::UnixStream> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    std::thread::Builder::new().name(format!("sftp-{pid}")).spawn(move || {
        let mut io = theirs;
        match enter(pid, user.as_deref().unwrap_or("root")) {
            Ok((home, opener)) => {
                if let Err(e) = serve(&mut io, &home, opener) {
                    tracing::debug!(pid, "sftp session ended: {e}");
                }
            }
            Err(e) => {
                tracing::info!(pid, "sftp: could not enter the container: {e}");
            }
        }
    })?;
    tokio::net::UnixStream::from_std(ours)
}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Moves this thread into the container's files as `user`; returns the user's home directory,
/// where relative paths start, and how the thread opens files there.
#[allow(unsafe_code)]
fn enter(pid: i64, user: &str) -> io::Result<(PathBuf, open::Opener)> {
    let ns = File::open(format!("/proc/{pid}/ns/mnt"))?;
    // The node's /proc, while this thread still sees it.
    let opener = open::Opener::new()?;
    // SAFETY: unshare(2) and setns(2) on this thread only (CLONE_FS gives it its own root and
    // working directory first, which setns into a mount namespace requires); the fd is open.
    unsafe {
        if libc::unshare(libc::CLONE_FS) != 0 {
            return Err(last_error("unshare"));
        }
        if libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNS) != 0 {
            return Err(last_error("setns"));
        }
    }
    drop(ns);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (uid, gid, home) = match lookup(&passwd, user) {
        Some(x) => x,
        None if user == "root" => (0, 0, PathBuf::from("/root")),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no user {user:?} in the container's /etc/passwd"),
            ))
        }
    };
    // SAFETY: raw syscalls, so they change this thread's credentials only (the C library's
    // wrappers of setgroups would change every thread's).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
            return Err(last_error("setgroups"));
        }
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        libc::umask(0o022);
    }
    let home = if home.is_dir() { home } else { PathBuf::from("/") };
    std::env::set_current_dir(&home)?;
    Ok((home, opener))
}

/// `user`'s uid, gid and home directory in a passwd file.
fn lookup(passwd: &str, user: &str) -> Option<(u32, u32, PathBuf)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5]))))?
    })
}

/// An open file or a directory being listed.
enum Handle {
    File(File),
    Dir(Vec<(String, std::fs::Metadata)>),
}

fn set_attrs(opener: &open::Opener, path: &Path, a: &Attrs) -> io::Result<()> {
    if let Some(size) = a.size {
        let write = open::Want {
            write: true,
            ..Default::default()
        };
        opener.open(path, write)?.set_len(size)?;
    }
    if let Some(mode) = a.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Some((uid, gid)) = a.owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    if let Some((atime, mtime)) = a.times {
        let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
        let times = std::fs::FileTimes::new().set_accessed(t(atime)).set_modified(t(mtime));
        // Opening for writing would fail on a read-only file whose times `scp -p` sets.
        let read = open::Want {
            read: true,
            ..Default::default()
        };
        opener.open(path, read)?.set_times(times)?;
    }
    Ok(())
}

fn set_file_attrs(f: &File, a: &Attrs) -> io::Result<()> {
    if let Some(size) = a.size {
        f.set_len(size)?;
    }
    if let Some(mode) = a.mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Some((uid, gid)) = a.owner {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))?;
    }
    if let Some((atime, mtime)) = a.times {
        let t = |s: u32| std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(s));
        f.set_times(std::fs::FileTimes::new().set_accessed(t(atime)).set_modified(t(mtime)))?;
    }
    Ok(())
}

/// A session's state: its handles, where relative paths start, how it opens files.
struct Server {
    handles: HashMap<u32, Handle>,
    next: u32,
    home: PathBuf,
    opener: open::Opener,
}

/// Serves SFTP on `io` until the client closes it. An error is the reason the session ended.
pub(crate) fn serve<S: Read + Write>(io: &mut S, home: &Path, opener: open::Opener) -> io::Result<()> {
    let mut server = Server {
        handles: HashMap::new(),
        next: 0,
        home: home.to_owned(),
        opener,
    };
    let mut len = [0u8; 4];
    loop {
        match io.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_PACKET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a request of {n} bytes"),
            ));
        }
        let mut packet = vec![0u8; n];
        io.read_exact(&mut packet)?;
        let reply = server.handle(&packet);
        io.write_all(&reply)?;
        io.flush()?;
    }
}

impl Server {
    fn handle(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut f = Fields(packet);
        let Some(kind) = f.u8() else {
            return Reply::status(0, BAD_MESSAGE, "empty request").finish();
        };
        if kind == INIT {
            // Version 3, with OpenSSH's atomic rename.
            let mut r = Reply(vec![0, 0, 0, 0, VERSION]);
            r.u32(3).bytes(b"posix-rename@openssh.com").bytes(b"1");
            return r.finish();
        }
        let Some(id) = f.u32() else {
            return Reply::status(0, BAD_MESSAGE, "no request id").finish();
        };
        match self.request(kind, id, &mut f) {
            Some(r) => r.finish(),
            None => Reply::status(id, BAD_MESSAGE, "malformed request").finish(),
        }
    }

    fn add(&mut self, id: u32, h: Handle) -> Reply {
        if self.handles.len() >= MAX_HANDLES {
            return Reply::status(id, FAILURE, "too many open files in this session");
        }
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        self.handles.insert(n, h);
        let mut r = Reply::new(HANDLE, id);
        r.bytes(&n.to_be_bytes());
        r
    }

    fn handle_of(f: &mut Fields<'_>) -> Option<u32> {
        let b = f.bytes()?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }

    fn file(&self, h: u32) -> Option<&File> {
        match self.handles.get(&h) {
            Some(Handle::File(file)) => Some(file),
            _ => None,
        }
    }

    /// `None`: the request did not parse.
    fn request(&mut self, kind: u8, id: u32, f: &mut Fields<'_>) -> Option<Reply> {
        let done = |r: io::Result<()>| match r {
            Ok(()) => Reply::status(id, OK, "ok"),
            Err(e) => Reply::error(id, &e),
        };
        let bad_handle = || Reply::status(id, FAILURE, "no such handle");
        Some(match kind {
            OPEN => {
                let (path, flags, attrs) = (f.path()?, f.u32()?, f.attrs()?);
                let want = open::Want {
                    read: flags & OPEN_READ != 0,
                    write: flags & OPEN_WRITE != 0,
                    append: flags & OPEN_APPEND != 0,
                    truncate: flags & OPEN_TRUNC != 0,
                    create: flags & OPEN_CREAT != 0,
                    create_new: flags & OPEN_EXCL != 0,
                    mode: attrs.mode.unwrap_or(0o666) & 0o7777,
                };
                match self.opener.open(&path, want) {
                    Ok(file) => self.add(id, Handle::File(file)),
                    Err(e) => Reply::error(id, &e),
                }
            }
            CLOSE => match self.handles.remove(&Self::handle_of(f)?) {
                Some(_) => Reply::status(id, OK, "ok"),
                None => bad_handle(),
            },
            READ => {
                let (h, offset, len) = (Self::handle_of(f)?, f.u64()?, f.u32()?);
                let Some(file) = self.file(h) else {
                    return Some(bad_handle());
                };
                let mut buf = vec![0u8; len.min(MAX_READ) as usize];
                match file.read_at(&mut buf, offset) {
                    Ok(0) if !buf.is_empty() => Reply::status(id, EOF, "end of file"),
                    Ok(n) => {
                        let mut r = Reply::new(DATA, id);
                        r.bytes(&buf[..n]);
                        r
                    }
                    Err(e) => Reply::error(id, &e),
                }
            }
            WRITE => {
                let (h, offset, data) = (Self::handle_of(f)?, f.u64()?, f.bytes()?);
                let Some(file) = self.file(h) else {
                    return Some(bad_handle());
                };
                done(file.write_all_at(data, offset))
            }
            LSTAT | STAT => {
                let path = f.path()?;
                let m = if kind == LSTAT {
                    std::fs::symlink_metadata(&path)
                } else {
                    std::fs::metadata(&path)
                };
                match m {
                    Ok(m) => {
                        let mut r = Reply::new(ATTRS, id);
                        r.attrs(&m);
                        r
                    }
                    Err(e) => Reply::error(id, &e),
                }
            }
            FSTAT => {
                let Some(file) = self.file(Self::handle_of(f)?) else {
                    return Some(bad_handle());
                };
                match file.metadata() {
                    Ok(m) => {
                        let mut r = Reply::new(ATTRS, id);
                        r.attrs(&m);
                        r
                    }
                    Err(e) => Reply::error(id, &e),
                }
            }
            SETSTAT => {
                let (path, attrs) = (f.path()?, f.attrs()?);
                done(set_attrs(&self.opener, &path, &attrs))
            }
            FSETSTAT => {
                let (h, attrs) = (Self::handle_of(f)?, f.attrs()?);
                let Some(file) = self.file(h) else {
                    return Some(bad_handle());
                };
                done(set_file_attrs(file, &attrs))
            }
            OPENDIR => {
                let path = f.path()?;
                let listed = std::fs::read_dir(&path).and_then(|rd| {
                    let mut entries = Vec::new();
                    for dot in [".", ".."] {
                        if let Ok(m) = std::fs::symlink_metadata(path.join(dot)) {
                            entries.push((dot.to_owned(), m));
                        }
                    }
                    for e in rd {
                        let e = e?;
                        if let Ok(m) = e.metadata() {
                            entries.push((e.file_name().to_string_lossy().into_owned(), m));
                        }
                    }
                    entries.reverse();
                    Ok(entries)
                });
                match listed {
                    Ok(entries) => self.add(id, Handle::Dir(entries)),
                    Err(e) => Reply::error(id, &e),
                }
            }
            READDIR => {
                let Some(Handle::Dir(entries)) = self.handles.get_mut(&Self::handle_of(f)?) else {
                    return Some(bad_handle());
                };
                if entries.is_empty() {
                    return Some(Reply::status(id, EOF, "end of directory"));
                }
                let batch: Vec<_> = (0..DIR_BATCH).map_while(|_| entries.pop()).collect();
                let mut r = Reply::new(NAME, id);
                r.u32(u32::try_from(batch.len()).unwrap_or(0));
                for (name, m) in &batch {
                    r.bytes(name.as_bytes()).bytes(long_name(name, m).as_bytes()).attrs(m);
                }
                r
            }
            REMOVE => done(std::fs::remove_file(f.path()?)),
            MKDIR => {
                let (path, attrs) = (f.path()?, f.attrs()?);
                let mut b = std::fs::DirBuilder::new();
                std::os::unix::fs::DirBuilderExt::mode(&mut b, attrs.mode.unwrap_or(0o777) & 0o7777);
                done(b.create(&path))
            }
            RMDIR => done(std::fs::remove_dir(f.path()?)),
            REALPATH => {
                let path = f.path()?;
                let full = if path.is_absolute() { path } else { self.home.join(path) };
                // A path that does not exist yet (an upload's target) is made absolute lexically.
                let real = std::fs::canonicalize(&full).unwrap_or_else(|_| normalize(&full));
                let mut r = Reply::new(NAME, id);
                let name = real.to_string_lossy();
                r.u32(1).bytes(name.as_bytes()).bytes(name.as_bytes()).u32(0);
                r
            }
            RENAME => {
                let (from, to) = (f.path()?, f.path()?);
                // SFTP v3 rename must not replace an existing file; posix-rename may.
                if std::fs::symlink_metadata(&to).is_ok() {
                    Reply::status(id, FAILURE, "the target exists")
                } else {
                    done(std::fs::rename(from, to))
                }
            }
            READLINK => match std::fs::read_link(f.path()?) {
                Ok(target) => {
                    let t = target.to_string_lossy();
                    let mut r = Reply::new(NAME, id);
                    r.u32(1).bytes(t.as_bytes()).bytes(t.as_bytes()).u32(0);
                    r
                }
                Err(e) => Reply::error(id, &e),
            },
            SYMLINK => {
                // OpenSSH sends the target first, then the link (the reverse of the draft).
                let (target, link) = (f.path()?, f.path()?);
                done(std::os::unix::fs::symlink(target, link))
            }
            EXTENDED => {
                let name = f.bytes()?;
                if name == b"posix-rename@openssh.com" {
                    let (from, to) = (f.path()?, f.path()?);
                    done(std::fs::rename(from, to))
                } else {
                    Reply::status(id, UNSUPPORTED, "unsupported extension")
                }
            }
            _ => Reply::status(id, UNSUPPORTED, "unsupported request"),
        })
    }
}

/// `path` without `.` and `..` parts (no symlinks followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
