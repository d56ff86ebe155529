//! A cap on what the node keeps of a task's output. A stream's file that grows past the cap loses
//! its oldest part: those bytes are punched out of the file (its blocks freed, its offsets kept,
//! so whoever writes it — the task itself, for a process task — goes on as if nothing happened),
//! and `NAME.dropped` records where the kept part starts. Readers start there, after a line that
//! says how much was dropped: output is never shortened silently.

use std::io;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

/// How much output a container's pump writes between two looks at its files' sizes.
pub(crate) const CHECK_EVERY: usize = 4 << 20;

/// Dropped ranges are whole 64 KiB pieces, so the kept part starts on a filesystem block.
const PIECE: u64 = 64 << 10;

fn marker(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".dropped");
    PathBuf::from(name)
}

/// Where the kept part of `log` starts (0: nothing was dropped).
pub(crate) fn dropped(log: &Path) -> u64 {
    std::fs::read_to_string(marker(log))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The line readers see before the kept part of a stream whose first `dropped` bytes are gone.
pub(crate) fn dropped_line(dropped: u64, cap: Option<u64>) -> String {
    let cap = cap.map_or(String::new(), |c| format!(" of {}", river_task::size::human(c)));
    format!(
        "[river: the first {} of this output were dropped: the node keeps the last part, within its task_output_limit{cap}]\n",
        river_task::size::human(dropped)
    )
}

/// Keeps `log` within `cap` bytes: once it holds more, everything before its last `cap / 2`
/// (rounded to a piece) is dropped. Returns where its kept part now starts.
#[allow(unsafe_code)]
pub(crate) fn trim(log: &Path, cap: u64) -> io::Result<u64> {
    let before = dropped(log);
    let file = match std::fs::OpenOptions::new().write(true).open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(before),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len.saturating_sub(before) <= cap {
        return Ok(before);
    }
    let start = (len - cap / 2) / PIECE * PIECE;
    if start <= before {
        return Ok(before);
    }
    let off = i64::try_from(before).unwrap_or(i64::MAX);
    let n = i64::try_from(start - before).unwrap_or(i64::MAX);
    // SAFETY: fallocate on an open descriptor of ours; it reads no memory of this process.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // Written whole or not at all: a reader never sees half a number.
    let m = marker(log);
    let tmp = m.with_extension("dropped.new");
    std::fs::write(&tmp, start.to_string())?;
    std::fs::rename(&tmp, &m)?;
    Ok(start)
}

/// Forgets what was dropped of a task's streams: their files were made anew.
pub(crate) fn forget_dropped(dir: &Path) {
    for name in ["stdout.log", "stderr.log"] {
        let _ = std::fs::remove_file(marker(&dir.join(name)));
    }
}

/// Trims both of a task's streams in `dir`; a failure is logged once per task (the cap is not
/// kept then, and nothing else is lost).
pub(crate) fn trim_task(dir: &Path, cap: u64, warned: &mut bool) {
    for name in ["stdout.log", "stderr.log"] {
        if let Err(e) = trim(&dir.join(name), cap) {
            if !std::mem::replace(warned, true) {
                tracing::warn!(dir = %dir.display(), "cannot keep task output within task_output_limit: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Seek as _, Write as _};

    #[test]
    fn a_growing_log_keeps_its_last_part_and_says_where_it_starts() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("stdout.log");
        // Written by someone else all along (as a process task writes its own file).
        let mut w = std::fs::File::create(&log).unwrap();
        let cap = 1 << 20;
        assert_eq!(trim(&log, cap).unwrap(), 0);
        let mut line = 0u64;
        for _ in 0..200 {
            for _ in 0..1000 {
                writeln!(w, "line {line:08}").unwrap();
                line += 1;
            }
            trim(&log, cap).unwrap();
        }
        let len = std::fs::metadata(&log).unwrap().len();
        let start = dropped(&log);
        assert!(
            start > 0 && len - start <= cap && len - start >= cap / 2,
            "{start} {len}"
        );
        // The blocks before are gone; what is kept is the end, whole.
        let mut f = std::fs::File::open(&log).unwrap();
        f.seek(io::SeekFrom::Start(start)).unwrap();
        let mut kept = String::new();
        f.read_to_string(&mut kept).unwrap();
        assert!(kept.ends_with(&format!("line {:08}\n", line - 1)));
        use std::os::unix::fs::MetadataExt as _;
        let used = std::fs::metadata(&log).unwrap().blocks() * 512;
        assert!(used < len, "the dropped part still takes {used} of {len} bytes");
        // Within the cap: nothing more is dropped.
        assert_eq!(trim(&log, cap).unwrap(), start);
        assert!(dropped_line(start, Some(cap)).contains("were dropped"));
    }
}
