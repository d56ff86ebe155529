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

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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

/// A request's fields, read in order; any short read is a malformed packet.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }
    fn path(&mut self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt as _;
        let b = self.bytes()?;
        // An empty path is the working directory, as OpenSSH's server treats it.
        Some(if b.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(std::ffi::OsStr::from_bytes(b))
        })
    }
    fn attrs(&mut self) -> Option<Attrs> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.owner = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.mode = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            for _ in 0..self.u32()? {
                self.bytes()?;
                self.bytes()?;
            }
        }
        Some(a)
    }
}

/// The attributes a client asks to set.
#[derive(Debug, Default, PartialEq, Eq)]
struct Attrs {
    size: Option<u64>,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    times: Option<(u32, u32)>,
}

/// An answer being built.
struct Reply(Vec<u8>);

impl Reply {
    fn new(kind: u8, id: u32) -> Self {
        let mut r = Reply(vec![0, 0, 0, 0, kind]);
        r.u32(id);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
        self
    }
    fn attrs(&mut self, m: &std::fs::Metadata) -> &mut Self {
        self.u32(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME)
            .u64(m.size())
            .u32(m.uid())
            .u32(m.gid())
            .u32(m.mode())
            .u32(clamp_time(m.atime()))
            .u32(clamp_time(m.mtime()))
    }
    fn status(id: u32, code: u32, message: &str) -> Self {
        let mut r = Reply::new(STATUS, id);
        r.u32(code).bytes(message.as_bytes()).bytes(b"en");
        r
    }
    fn error(id: u32, e: &io::Error) -> Self {
        let code = match e.kind() {
            io::ErrorKind::NotFound => NO_SUCH_FILE,
            io::ErrorKind::PermissionDenied => PERMISSION_DENIED,
            _ => FAILURE,
        };
        Reply::status(id, code, &e.to_string())
    }
    fn finish(mut self) -> Vec<u8> {
        let n = u32::try_from(self.0.len() - 4).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&n.to_be_bytes());
        self.0
    }
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// `ls -l`'s line for an entry, which `sftp`'s `ls -l` shows as it is.
fn long_name(name: &str, m: &std::fs::Metadata) -> String {
    let mode = m.mode();
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut perms = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    format!(
        "{kind}{perms} {:>3} {:<8} {:<8} {:>10} {}",
        m.nlink(),
        m.uid(),
        m.gid(),
        m.size(),
        name
    )
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
mod tests {
    use super::*;

    fn request(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&u32::try_from(body.len() + 5).unwrap().to_be_bytes());
        p.push(kind);
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(b.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    /// Runs `requests` through a server and returns each answer's type and body.
    fn run(home: &Path, requests: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
        let mut server = Server {
            handles: HashMap::new(),
            next: 0,
            home: home.to_owned(),
            opener: open::Opener::new().unwrap(),
        };
        requests
            .iter()
            .map(|r| {
                let out = server.handle(&r[4..]);
                let n = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
                assert_eq!(n, out.len() - 4, "length prefix");
                (out[4], out[5..].to_vec())
            })
            .collect()
    }

    fn status(body: &[u8]) -> u32 {
        u32::from_be_bytes(body[4..8].try_into().unwrap())
    }

    #[test]
    fn write_then_read_a_file_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f.txt");
        let p = path.to_str().unwrap().as_bytes();
        let mut open = s(p);
        open.extend_from_slice(&(OPEN_WRITE | OPEN_CREAT | OPEN_TRUNC).to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        let mut server = Server {
            handles: HashMap::new(),
            next: 0,
            home: d.path().to_owned(),
            opener: open::Opener::new().unwrap(),
        };
        let opened = server.handle(&request(OPEN, 1, &open)[4..]);
        assert_eq!(opened[4], HANDLE);
        let h = opened[9..].to_vec();
        let mut write = h.clone();
        write.extend_from_slice(&0u64.to_be_bytes());
        write.extend_from_slice(&s(b"hello sftp"));
        let r = server.handle(&request(WRITE, 2, &write)[4..]);
        assert_eq!((r[4], status(&r[5..])), (STATUS, OK));
        assert_eq!(server.handle(&request(CLOSE, 3, &h)[4..])[4], STATUS);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello sftp");

        let mut open = s(p);
        open.extend_from_slice(&OPEN_READ.to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        let opened = server.handle(&request(OPEN, 4, &open)[4..]);
        let h = opened[9..].to_vec();
        let mut read = h.clone();
        read.extend_from_slice(&6u64.to_be_bytes());
        read.extend_from_slice(&100u32.to_be_bytes());
        let r = server.handle(&request(READ, 5, &read)[4..]);
        assert_eq!(r[4], DATA);
        assert_eq!(&r[13..], b"sftp");
        let mut past = h.clone();
        past.extend_from_slice(&10u64.to_be_bytes());
        past.extend_from_slice(&100u32.to_be_bytes());
        let r = server.handle(&request(READ, 6, &past)[4..]);
        assert_eq!((r[4], status(&r[5..])), (STATUS, EOF));
    }

    #[test]
    fn errors_and_malformed_requests_get_a_status() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let out = run(
            d.path(),
            &[
                request(STAT, 1, &s(missing.to_str().unwrap().as_bytes())),
                request(STAT, 2, &[0, 0, 0, 9, b'x']),
                request(READ, 3, &s(&7u32.to_be_bytes())),
                request(99, 4, &[]),
            ],
        );
        assert_eq!((out[0].0, status(&out[0].1)), (STATUS, NO_SUCH_FILE));
        assert_eq!((out[1].0, status(&out[1].1)), (STATUS, BAD_MESSAGE));
        assert_eq!((out[2].0, status(&out[2].1)), (STATUS, BAD_MESSAGE));
        assert_eq!((out[3].0, status(&out[3].1)), (STATUS, UNSUPPORTED));
    }

    #[test]
    fn a_huge_length_ends_the_session() {
        let d = tempfile::tempdir().unwrap();
        let mut io = io::Cursor::new(Vec::new());
        io.get_mut().extend_from_slice(&u32::MAX.to_be_bytes());
        struct Both(io::Cursor<Vec<u8>>, Vec<u8>);
        impl Read for Both {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0.read(b)
            }
        }
        impl Write for Both {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.write(b)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut both = Both(io, Vec::new());
        assert!(serve(&mut both, d.path(), open::Opener::new().unwrap()).is_err());
        assert!(both.1.is_empty());
    }

    #[test]
    fn directories_list_in_batches_and_paths_resolve() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..150 {
            std::fs::write(d.path().join(format!("f{i}")), b"x").unwrap();
        }
        let mut server = Server {
            handles: HashMap::new(),
            next: 0,
            home: d.path().to_owned(),
            opener: open::Opener::new().unwrap(),
        };
        let opened = server.handle(&request(OPENDIR, 1, &s(d.path().to_str().unwrap().as_bytes()))[4..]);
        assert_eq!(opened[4], HANDLE);
        let h = opened[9..].to_vec();
        let mut names = 0;
        loop {
            let r = server.handle(&request(READDIR, 2, &h)[4..]);
            if r[4] == STATUS {
                assert_eq!(status(&r[5..]), EOF);
                break;
            }
            assert_eq!(r[4], NAME);
            names += u32::from_be_bytes(r[9..13].try_into().unwrap());
        }
        assert_eq!(names, 152, "150 files, . and ..");
        let r = server.handle(&request(REALPATH, 3, &s(b"."))[4..]);
        assert_eq!(r[4], NAME);
        let real = std::fs::canonicalize(d.path()).unwrap();
        let want = s(real.to_str().unwrap().as_bytes());
        assert_eq!(&r[13..13 + want.len()], &want[..]);
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn users_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n";
        assert_eq!(
            lookup(passwd, "alice"),
            Some((1000, 1001, PathBuf::from("/home/alice")))
        );
        assert_eq!(lookup(passwd, "bob"), None);
    }
}
