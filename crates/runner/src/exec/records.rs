//! What a node keeps of its finished tasks, beside their output in `tasks/ID/`: whether the host
//! has stored how each ended (then snapshots leave it out), whether its output is incomplete, and
//! for how long it is kept once the host has it (`task_retention`); the ids whose output was
//! removed are listed in `tasks/removed`, so `task logs` can say so.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Beside a task's `result.json` once the host has stored that end.
pub(crate) const ACKED: &str = "recorded-by-host";
/// Beside a task's output when some of it could not be saved; holds why.
pub(crate) const INCOMPLETE: &str = "output-incomplete";
/// In the tasks directory: the ids whose output was removed after the retention, one per line.
const REMOVED: &str = "removed";

/// Marks these tasks' recorded ends as stored by the host.
pub(crate) fn acknowledge(dir: &Path, ids: &[u64]) {
    for id in ids {
        let task = dir.join(id.to_string());
        if task.join("result.json").exists() {
            if let Err(e) = std::fs::write(task.join(ACKED), b"") {
                tracing::warn!(task = id, "marking the end as recorded by the host: {e}");
            }
        }
    }
}

/// Tasks whose recorded end the host has acknowledged.
pub(crate) fn acknowledged(dir: &Path) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(ACKED).exists())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Records that a task's output is incomplete and returns the sentence its record carries.
pub(crate) fn output_incomplete(task_dir: &Path, why: &str) -> String {
    // The directory may be what could not be made the first time.
    let written = std::fs::create_dir_all(task_dir).and_then(|()| std::fs::write(task_dir.join(INCOMPLETE), why));
    if let Err(e) = written {
        tracing::error!(dir = %task_dir.display(), "recording that the output is incomplete: {e}");
    }
    format!("its output is incomplete: {why}")
}

/// Removes the output of tasks whose end the host stored more than `retention` before `now`
/// (none when `retention` is zero), and lists their ids. Returns how many went.
pub(crate) fn prune(dir: &Path, retention: Duration, now: SystemTime) -> std::io::Result<usize> {
    if retention.is_zero() {
        return Ok(0);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(acked) = std::fs::metadata(e.path().join(ACKED)).and_then(|m| m.modified()) else {
            continue;
        };
        if now.duration_since(acked).is_ok_and(|age| age >= retention) {
            // Listed first: a crash between the two leaves an id listed whose output is still
            // there, never output gone without a word.
            removed.push(id);
        }
    }
    if removed.is_empty() {
        return Ok(0);
    }
    let mut list = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(REMOVED))?;
    for id in &removed {
        writeln!(list, "{id}")?;
    }
    list.sync_all()?;
    for id in &removed {
        std::fs::remove_dir_all(dir.join(id.to_string()))?;
    }
    Ok(removed.len())
}

/// Whether the output of task `id` was removed after the retention.
pub(crate) fn was_removed(dir: &Path, id: u64) -> bool {
    let id = id.to_string();
    std::fs::read_to_string(dir.join(REMOVED)).is_ok_and(|l| l.lines().any(|l| l == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_goes_after_the_retention_once_the_host_has_the_end_and_is_listed() {
        let d = tempfile::tempdir().unwrap();
        for id in [1u64, 2, 3] {
            let t = d.path().join(id.to_string());
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("result.json"), "{}").unwrap();
            std::fs::write(t.join("stdout.log"), "out").unwrap();
        }
        acknowledge(d.path(), &[1, 2]);
        assert_eq!(acknowledged(d.path()), HashSet::from([1, 2]));
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            prune(d.path(), Duration::ZERO, later).unwrap(),
            0,
            "0s keeps everything"
        );
        assert_eq!(prune(d.path(), Duration::from_secs(7200), later).unwrap(), 0, "not yet");
        assert_eq!(prune(d.path(), Duration::from_secs(60), later).unwrap(), 2);
        assert!(!d.path().join("1").exists() && !d.path().join("2").exists());
        assert!(
            d.path().join("3/stdout.log").exists(),
            "the host has not stored its end"
        );
        assert!(was_removed(d.path(), 1) && was_removed(d.path(), 2) && !was_removed(d.path(), 3));
    }
}
