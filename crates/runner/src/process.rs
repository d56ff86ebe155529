//! Processes on this machine: whether this one is root, fields of `/proc/PID/stat` of others, and
//! signals.

use std::os::unix::fs::MetadataExt as _;

/// Whether this process runs as root (and may so run tasks as other users, make cgroups, mount).
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Field `n` of `/proc/PID/stat`, counted from 1 as proc(5) does; from field 3 on (those after
/// the command).
pub(crate) fn stat_field<T: std::str::FromStr>(pid: i64, n: usize) -> Option<T> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold spaces: count from after it.
    let after_command = n.checked_sub(3)?;
    stat.get(stat.rfind(')')? + 2..)?
        .split(' ')
        .nth(after_command)?
        .parse()
        .ok()
}

/// Sends `sig` to `target` (a pid, or a process group as a negative number), as kill(2) does.
/// A process that is gone is no error worth reporting here.
#[allow(unsafe_code)]
pub(crate) fn signal(target: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers; no memory is shared with the kernel.
    let _ = unsafe { libc::kill(target, sig) };
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn stat_fields_are_numbered_as_in_proc5() {
        let me = i64::from(std::process::id());
        // SAFETY: getppid(2) and getpgrp(2) have no preconditions.
        let (parent, group) = unsafe { (libc::getppid(), libc::getpgrp()) };
        assert_eq!(super::stat_field::<libc::pid_t>(me, 4), Some(parent));
        assert_eq!(super::stat_field::<libc::pid_t>(me, 5), Some(group));
        assert_eq!(
            super::stat_field::<i32>(me, 2),
            None,
            "only fields after the command are read"
        );
    }
}
