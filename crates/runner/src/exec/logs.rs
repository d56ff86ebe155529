//! A task's output as `task logs` reads it: what was saved, or with `--follow` the files as the
//! work writes them until it is over.

use super::{records, Executor};
use crate::backend::output;
use std::time::Duration;

impl Executor {
    /// Sends a task's output to `out`: with `follow` and running work, as it comes until the work
    /// is over and its files are whole; otherwise what was saved.
    pub async fn send_logs(
        &self,
        id: u64,
        stderr: bool,
        follow: bool,
        out: &mut river_mesh::SendStream,
    ) -> anyhow::Result<()> {
        // Output is followed in its file, whatever the backend: a container's is written there by
        // its pump, not read from the engine's live stream, which can end before the container's
        // last bytes (seen with short tasks: `logs -f` got "one" of "one\ntwo"), while the pump
        // makes its file whole before the backend lets go of the task.
        if follow && self.is_live(id) {
            return self.follow_file(id, stderr, out).await;
        }
        let path = self
            .node
            .task_dir(id)
            .join(if stderr { "stderr.log" } else { "stdout.log" });
        // Streamed from the file, however large, in large pieces handed to the stream without a
        // copy: QUIC flow control paces the reads.
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && records::was_removed(&self.node.dir, id) => {
                let _ = out.reset(river_proto::msg::LOGS_REMOVED.into());
                anyhow::bail!("the output of task {id} was removed after the node's task_retention")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // What the node no longer keeps is skipped, with a line saying so. (A running container
        // followed above comes from its engine, which keeps all of it.)
        let dropped = output::dropped(&path);
        if dropped > 0 {
            out.write_all(output::dropped_line(dropped, self.node.output_cap).as_bytes())
                .await?;
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(dropped)).await?;
        }
        let mut buf = bytes::BytesMut::new();
        loop {
            buf.reserve(256 << 10);
            if tokio::io::AsyncReadExt::read_buf(&mut file, &mut buf).await? == 0 {
                break;
            }
            out.write_chunk(buf.split().freeze()).await?;
        }
        // What was kept has gone out; if that is not all there was, the stream does not end
        // cleanly: the reader sees why.
        match std::fs::read_to_string(self.node.task_dir(id).join(records::INCOMPLETE)) {
            Ok(why) => {
                let _ = out.reset(river_proto::msg::LOGS_INCOMPLETE.into());
                anyhow::bail!("the output of task {id} is incomplete: {why}")
            }
            Err(_) => Ok(()),
        }
    }

    /// `logs -f` of a running task: its output file as it grows, until the task is over and
    /// everything it wrote is in the file (then one last read).
    async fn follow_file(&self, id: u64, stderr: bool, out: &mut river_mesh::SendStream) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let path = self
            .node
            .task_dir(id)
            .join(if stderr { "stderr.log" } else { "stdout.log" });
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut ends = self.output_ends.subscribe();
        loop {
            // Marked seen before the check: an end after it wakes the wait below.
            ends.borrow_and_update();
            // Checked before reading, so the last read sees everything written before the end.
            let ended = !self.is_live(id);
            // What the node no longer keeps is skipped, with a line saying so.
            let dropped = output::dropped(&path);
            if sent < dropped {
                out.write_all(output::dropped_line(dropped - sent, self.node.output_cap).as_bytes())
                    .await?;
                sent = dropped;
            }
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                f.seek(std::io::SeekFrom::Start(sent)).await?;
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).await?;
                    sent += n as u64;
                }
            }
            if ended {
                return Ok(());
            }
            // New output is looked for every 0.1 s; the end is heard of at once.
            let _ = tokio::time::timeout(Duration::from_millis(100), ends.changed()).await;
        }
    }
}
