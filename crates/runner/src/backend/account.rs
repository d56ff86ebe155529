//! Who a task runs as on this node, and the scratch directory that belongs to its owner.
//!
//! Each river user has a uid of their own here: the node's account of the same name where there
//! is one in the range of ordinary accounts (as Slurm does), else `task_uid_base` plus the number
//! the host gave the user, the same on every node. So no user can read another's
//! `/proc/PID/environ`, signal their processes or write their files.

use super::Node;
use river_proto::msg::{TaskOwner, TaskPlacement};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The uids of ordinary accounts (Debian's `UID_MIN`..=`UID_MAX`): a river user named `root`,
/// `daemon` or `nobody` never runs as that system account.
const ACCOUNT_UIDS: std::ops::RangeInclusive<u32> = 1000..=59999;

/// A uid and its primary gid.
pub(crate) type Ids = (u32, u32);

/// The uid and gid of `user` in `passwd`'s text, if it is an ordinary account.
fn account(passwd: &str, user: &str) -> Option<Ids> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0] != user {
            return None;
        }
        let ids: Ids = (f[2].parse().ok()?, f[3].parse().ok()?);
        ACCOUNT_UIDS.contains(&ids.0).then_some(ids)
    })
}

/// Whose task a placement is for; every placement from a host of this version says.
pub(crate) fn owner_of(p: &TaskPlacement) -> Result<&TaskOwner, String> {
    p.owner
        .as_ref()
        .ok_or_else(|| "the host did not say whose task this is; upgrade the host".to_owned())
}

/// The ids `owner`'s tasks run as, given the node's `/etc/passwd` and the runner's base.
pub(crate) fn ids_of(passwd: &str, owner: &TaskOwner, base: u32) -> Result<Ids, String> {
    if let Some(ids) = account(passwd, &owner.name) {
        return Ok(ids);
    }
    let uid = base
        .checked_add(owner.number)
        .filter(|u| *u < u32::MAX - 1)
        .ok_or_else(|| format!("task_uid_base {base} leaves no uid for user number {}", owner.number))?;
    Ok((uid, uid))
}

impl Node {
    /// The ids `owner`'s unprivileged work runs as on this node; `None` when the runner itself is
    /// not root (then everything runs as the runner's user).
    pub(crate) fn ids(&self, owner: &TaskOwner) -> Result<Option<Ids>, String> {
        if !crate::process::running_as_root() {
            return Ok(None);
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        ids_of(&passwd, owner, self.task_uid_base).map(Some)
    }

    /// `scratch/NAME`: the owner's own scratch directory, mounted at `/local_temp` in their
    /// containers and `RIVER_SCRATCH` for their processes; theirs alone (mode 0700). Made by root
    /// in a directory only root writes, and never through a link.
    pub(crate) fn user_scratch(&self, owner: &TaskOwner, ids: Option<Ids>) -> Result<PathBuf, String> {
        let fail =
            |p: &Path, e: std::io::Error| format!("scratch directory {} on node {}: {e}", p.display(), self.node);
        let root = &self.scratch;
        std::fs::create_dir_all(root).map_err(|e| fail(root, e))?;
        let dir = root.join(&owner.name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(&dir, e)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| fail(&dir, e))?;
        if !meta.file_type().is_dir() {
            return Err(format!(
                "scratch directory {} on node {} is not a directory; an admin should remove it",
                dir.display(),
                self.node
            ));
        }
        if let Some((uid, gid)) = ids {
            // Neither call follows a link: `dir` was just seen to be a directory, in a parent that
            // only root can write.
            std::os::unix::fs::lchown(&dir, Some(uid), Some(gid)).map_err(|e| fail(&dir, e))?;
            if meta.permissions().mode() & 0o7777 != 0o700 {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail(&dir, e))?;
            }
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        ann:x:1001:1001::/home/ann:/bin/bash\n\
        svc:x:999:999::/:/usr/sbin/nologin\n";

    fn owner(name: &str, number: u32) -> TaskOwner {
        TaskOwner {
            name: name.into(),
            number,
            operator: false,
        }
    }

    #[test]
    fn a_user_runs_as_their_account_or_a_uid_of_their_own() {
        assert_eq!(ids_of(PASSWD, &owner("ann", 7), 2_000_000_000), Ok((1001, 1001)));
        assert_eq!(
            ids_of(PASSWD, &owner("bob", 7), 2_000_000_000),
            Ok((2_000_000_007, 2_000_000_007))
        );
        assert_ne!(
            ids_of(PASSWD, &owner("bob", 7), 2_000_000_000),
            ids_of(PASSWD, &owner("cy", 8), 2_000_000_000)
        );
    }

    #[test]
    fn system_accounts_are_never_borrowed() {
        for name in ["root", "nobody", "svc"] {
            let (uid, _) = ids_of(PASSWD, &owner(name, 3), 2_000_000_000).unwrap();
            assert_eq!(uid, 2_000_000_003, "{name}");
        }
        assert!(ids_of(PASSWD, &owner("bob", u32::MAX), 2_000_000_000).is_err());
    }
}
