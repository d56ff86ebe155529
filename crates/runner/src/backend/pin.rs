//! `--mount` sources resolved once and pinned, so what the engine mounts is what was checked.
//!
//! A task may write inside the trees it may mount from (its scratch, the shared directory), so a
//! path checked by the runner and then handed to the engine as a string can be swapped for a link
//! to `/` in between. Instead the runner opens the source beneath its allowed root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` — one walk, no link followed, nothing above the
//! root reachable — and binds that open file (through `/proc/self/fd/N`, which names the file, not
//! a path) onto a directory of its own that no task can write. The engine gets that path. Once the
//! container has started it holds its own copy of the mount, and the pin is undone.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Opens `rel` beneath the directory `root` without following any symbolic link and without
/// leaving `root`: an `O_PATH` descriptor of what is there now.
#[allow(unsafe_code)]
fn open_beneath(root: &Path, rel: &Path) -> std::io::Result<OwnedFd> {
    let root = std::fs::File::open(root)?;
    let rel = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2(2) reads `rel` (a NUL-terminated string) and `how` (a `struct open_how` of
    // the size given), both alive for the call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// mount(2) of `source` onto `target` as a recursive bind.
#[allow(unsafe_code)]
fn bind(source: &Path, target: &Path) -> std::io::Result<()> {
    let (source, target) = (cstr(source)?, cstr(target)?);
    // SAFETY: mount(2) reads two NUL-terminated strings alive for the call; the file system type
    // and data may be null for a bind.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// umount2(2) of `target`, detached; nothing mounted there is no error.
#[allow(unsafe_code)]
fn unmount(target: &Path) {
    if let Ok(target) = cstr(target) {
        // SAFETY: umount2(2) reads one NUL-terminated string alive for the call.
        let _ = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `source` below `root` (both absolute), as a path relative to `root`; `None` when it is not
/// below it. `.` and `..` are settled on the path's text first: with no link followed when it is
/// opened, the text is what the kernel walks.
fn below(source: &Path, root: &Path) -> Option<PathBuf> {
    let mut plain = PathBuf::new();
    for c in source.components() {
        match c {
            Component::ParentDir => {
                plain.pop();
            }
            Component::CurDir => {}
            c => plain.push(c),
        }
    }
    plain.strip_prefix(root).ok().map(Path::to_owned)
}

/// Pinned sources, undone when dropped.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    made: Vec<PathBuf>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        for p in self.made.drain(..) {
            unmount(&p);
            let _ = std::fs::remove_dir(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
}

impl Pins {
    /// Resolves `source` beneath the first of `roots` (absolute directories) it lies below and
    /// pins what is there at `at`; `at` is what the engine is to mount.
    pub(crate) fn pin(&mut self, source: &str, roots: &[PathBuf], at: &Path) -> Result<PathBuf, String> {
        let path = Path::new(source);
        if !path.is_absolute() {
            return Err(format!("mount source {source} must be an absolute path"));
        }
        let Some((root, rel)) = roots.iter().find_map(|r| Some((r, below(path, r)?))) else {
            return Err(format!(
                "mount source {source} is not under a directory tasks may mount (the node's shared_dir, your scratch directory or allowed_mounts)"
            ));
        };
        let fd = open_beneath(root, &rel).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!("mount source {source} goes through a symbolic link; give the real path"),
            Some(libc::EXDEV) => format!("mount source {source} leads out of {}", root.display()),
            _ => format!("mount source {source}: {e}"),
        })?;
        let is_dir = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| format!("mount source {source}: {e}"))?
            .is_dir();
        if !crate::process::running_as_root() {
            // Nothing can be pinned without root: the engine gets the path of what was opened.
            return std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(|e| format!("mount source {source}: {e}"));
        }
        // A pin left by a runner that stopped before undoing it.
        unmount(at);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let made = if is_dir {
            std::fs::create_dir(at).or_else(|e| if at.is_dir() { Ok(()) } else { Err(e) })
        } else {
            std::fs::File::create(at).map(drop)
        };
        made.map_err(|e| format!("{}: {e}", at.display()))?;
        self.made.push(at.to_owned());
        bind(&Path::new("/proc/self/fd").join(fd.as_raw_fd().to_string()), at)
            .map_err(|e| format!("mount source {source} could not be pinned: {e}"))?;
        Ok(at.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_taken_relative_to_its_root() {
        let root = Path::new("/srv/shared");
        assert_eq!(below(Path::new("/srv/shared/a/./b"), root), Some(PathBuf::from("a/b")));
        assert_eq!(below(Path::new("/srv/shared"), root), Some(PathBuf::new()));
        assert_eq!(below(Path::new("/srv/sharedx/a"), root), None);
        assert_eq!(below(Path::new("/srv/shared/../etc"), root), None);
        assert_eq!(below(Path::new("/srv/shared/a/../b"), root), Some(PathBuf::from("b")));
    }

    #[test]
    fn no_link_is_followed_and_nothing_above_the_root_is_reached() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("real/inner")).unwrap();
        std::os::unix::fs::symlink("/", root.join("link")).unwrap();
        std::os::unix::fs::symlink("real", root.join("rel")).unwrap();
        assert!(open_beneath(&root, Path::new("real/inner")).is_ok());
        assert!(open_beneath(&root, Path::new("")).is_ok());
        for bad in ["link", "link/etc", "rel/inner", "../root/real", "real/../../root"] {
            let e = open_beneath(&root, Path::new(bad)).unwrap_err();
            // EAGAIN: the kernel could not rule out that `..` escaped while something on the
            // machine was renamed, and refused (`pin` never passes it a `..`).
            assert!(
                matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV | libc::EAGAIN)),
                "{bad}: {e}"
            );
        }
    }
}
