//! A long request with a progress bar: while it runs, a second request on the same connection
//! asks the host how far the operation has got (`Request::Progress`), four times a second.

use crate::client::Client;
use crate::output::Progress;
use river_proto::msg::{Request, Response};
use std::future::Future;
use std::time::Duration;

/// Runs `work` (a request on `client`), drawing the progress the host keeps under `key` on a
/// terminal.
pub async fn with_progress<T>(
    client: &Client,
    key: String,
    label: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let mut bar = Progress::new(label);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                if let Ok(Response::Progress(Some(p))) = client.call(Request::Progress { key: key.clone() }).await {
                    bar.step(&p.phase, p.done, p.total);
                }
            }
        }
    };
    bar.clear();
    result
}
