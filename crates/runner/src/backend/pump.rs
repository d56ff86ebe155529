//! A container's output saved into its task's files as it is written, made whole from the
//! engine's log once the container has ended.

use super::output;
use futures_util::StreamExt as _;
use river_docker::{Output, Runtime};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt as _;

/// Copies a container's output into `dir/stdout.log` and `dir/stderr.log` until it stops.
/// Saves a container's output as it is written. An error means some of it is not saved (a full
/// disk, the engine gone): it says what, and the task's record and `task logs` say the output is
/// incomplete.
pub(super) async fn pump_output(rt: Runtime, cid: String, dir: PathBuf, cap: Option<u64>) -> Result<(), String> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io("the task directory"))?;
    let mut out = tokio::fs::File::create(dir.join("stdout.log"))
        .await
        .map_err(io("stdout.log"))?;
    let mut err = tokio::fs::File::create(dir.join("stderr.log"))
        .await
        .map_err(io("stderr.log"))?;
    // The files are new: so is what they keep.
    output::forget_dropped(&dir);
    let (mut live_out, mut live_err) = (0usize, 0usize);
    let (mut unchecked, mut warned) = (0usize, false);
    let mut s = Box::pin(rt.output(&cid, true));
    while let Some(chunk) = s.next().await {
        let n = match chunk {
            Ok(Output::Stdout(b)) => {
                out.write_all(&b).await.map_err(io("writing stdout.log"))?;
                live_out += b.len();
                b.len()
            }
            Ok(Output::Stderr(b)) => {
                err.write_all(&b).await.map_err(io("writing stderr.log"))?;
                live_err += b.len();
                b.len()
            }
            Err(e) => return Err(format!("reading the container's output: {e}")),
        };
        unchecked += n;
        // Looked at every quarter of the cap (at most every 4 MiB): the files exceed it by that
        // much at most.
        if let Some(cap) = cap.filter(|c| unchecked as u64 >= (c / 4).min(output::CHECK_EVERY as u64)) {
            unchecked = 0;
            out.flush().await.map_err(io("writing stdout.log"))?;
            err.flush().await.map_err(io("writing stderr.log"))?;
            output::trim_task(&dir, cap, &mut warned);
        }
    }
    // The live stream can end before the engine has handed over all of it (seen under load: the
    // last 14 KB of 25 MB, and the task still `completed`). Once the container has ended, its
    // whole log is read again and what the live stream missed is appended.
    rt.wait(&cid)
        .await
        .map_err(|e| format!("waiting for the container's end: {e}"))?;
    let (mut seen_out, mut seen_err) = (0usize, 0usize);
    let mut missed = 0usize;
    let mut s = Box::pin(rt.output(&cid, false));
    while let Some(chunk) = s.next().await {
        let (b, file, live, seen, what) = match chunk {
            Ok(Output::Stdout(b)) => (b, &mut out, live_out, &mut seen_out, "writing stdout.log"),
            Ok(Output::Stderr(b)) => (b, &mut err, live_err, &mut seen_err, "writing stderr.log"),
            Err(e) => return Err(format!("reading the container's output: {e}")),
        };
        let skip = live.saturating_sub(*seen).min(b.len());
        *seen += b.len();
        if skip < b.len() {
            file.write_all(&b[skip..]).await.map_err(io(what))?;
            missed += b.len() - skip;
        }
    }
    if missed > 0 {
        tracing::warn!(container = %cid, bytes = missed, "the engine's live output missed the end; took it from its log");
    }
    out.flush().await.map_err(io("writing stdout.log"))?;
    err.flush().await.map_err(io("writing stderr.log"))?;
    // On disk before the end is reported; both at once.
    let (o, e) = tokio::join!(out.sync_all(), err.sync_all());
    o.map_err(io("writing stdout.log"))?;
    e.map_err(io("writing stderr.log"))?;
    if let Some(cap) = cap {
        output::trim_task(&dir, cap, &mut warned);
    }
    Ok(())
}
