//! The protocol's wire format: a request's fields read in order, attributes, answers built.

use super::*;

/// A request's fields, read in order; any short read is a malformed packet.
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl Fields<'_> {
    pub(super) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        Some((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    pub(super) fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }
    pub(super) fn path(&mut self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStrExt as _;
        let b = self.bytes()?;
        // An empty path is the working directory, as OpenSSH's server treats it.
        Some(if b.is_empty() {
            PathBuf::from(".")
        } else {
            PathBuf::from(std::ffi::OsStr::from_bytes(b))
        })
    }
    pub(super) fn attrs(&mut self) -> Option<Attrs> {
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
pub(super) struct Attrs {
    pub(super) size: Option<u64>,
    pub(super) owner: Option<(u32, u32)>,
    pub(super) mode: Option<u32>,
    pub(super) times: Option<(u32, u32)>,
}

/// An answer being built.
pub(super) struct Reply(pub(super) Vec<u8>);

impl Reply {
    pub(super) fn new(kind: u8, id: u32) -> Self {
        let mut r = Reply(vec![0, 0, 0, 0, kind]);
        r.u32(id);
        r
    }
    pub(super) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
        self
    }
    pub(super) fn attrs(&mut self, m: &std::fs::Metadata) -> &mut Self {
        self.u32(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME)
            .u64(m.size())
            .u32(m.uid())
            .u32(m.gid())
            .u32(m.mode())
            .u32(clamp_time(m.atime()))
            .u32(clamp_time(m.mtime()))
    }
    pub(super) fn status(id: u32, code: u32, message: &str) -> Self {
        let mut r = Reply::new(STATUS, id);
        r.u32(code).bytes(message.as_bytes()).bytes(b"en");
        r
    }
    pub(super) fn error(id: u32, e: &io::Error) -> Self {
        let code = match e.kind() {
            io::ErrorKind::NotFound => NO_SUCH_FILE,
            io::ErrorKind::PermissionDenied => PERMISSION_DENIED,
            _ => FAILURE,
        };
        Reply::status(id, code, &e.to_string())
    }
    pub(super) fn finish(mut self) -> Vec<u8> {
        let n = u32::try_from(self.0.len() - 4).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&n.to_be_bytes());
        self.0
    }
}

pub(super) fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// `ls -l`'s line for an entry, which `sftp`'s `ls -l` shows as it is.
pub(super) fn long_name(name: &str, m: &std::fs::Metadata) -> String {
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
