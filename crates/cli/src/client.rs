//! The CLI's connection to the host: the user's credential bundle, renewed when due.

use anyhow::{bail, Context as _};
use river_creds::Bundle;
use river_mesh::{Connection, Endpoint};
use river_proto::msg::{Request, Response};
use std::path::{Path, PathBuf};

/// `--config-dir`, else `$XDG_CONFIG_HOME/river`, else `~/.config/river`.
pub fn config_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("river");
    }
    home().join(".config/river")
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

pub struct Client {
    conn: Connection,
    endpoint: Endpoint,
}

impl Client {
    pub async fn connect(dir: &Path) -> anyhow::Result<Self> {
        let bundle = Bundle::load(dir)?;
        let (endpoint, conn) = river_mesh::client::connect_bundle(&bundle)
            .await
            .with_context(|| format!("cannot reach the river host at {}", bundle.meta.host))?;
        let client = Self { conn, endpoint };
        // Renew the user certificate when it is past 70% of its life, so regular use never
        // meets an expired one.
        if let Err(e) = client.renew_if_due(dir).await {
            eprintln!("warning: could not renew the user certificate: {e}");
        }
        Ok(client)
    }

    /// Renews the user certificate in `dir` over this connection when it is past 70% of its
    /// life. Returns when the one on disk is next due.
    pub async fn renew_if_due(&self, dir: &Path) -> anyhow::Result<i64> {
        let bundle = Bundle::load(dir)?;
        let info = bundle.cert_info()?;
        let due = river_pki::renew_at(info.not_before, info.not_after);
        if now_s() < due {
            return Ok(due);
        }
        let name = bundle.meta.name.trim_start_matches("user ").to_owned();
        let renewed = river_mesh::client::renew(&self.conn, &bundle, &name).await?;
        renewed.save(dir)?;
        tracing::info!("renewed the user certificate in {}", dir.display());
        let info = renewed.cert_info()?;
        Ok(river_pki::renew_at(info.not_before, info.not_after))
    }

    /// Sends a request; a refusal from the host becomes an error with its message.
    pub async fn call(&self, req: Request) -> anyhow::Result<Response> {
        // A submission cut off before its answer may or may not have been stored.
        let unsure = match &req {
            Request::TaskSubmit(_) => {
                "; the task may or may not have been queued: `river task list` shows whether it was"
            }
            _ => "",
        };
        // Refusals already carry the host's reason; a dropped connection gets context.
        let resp = river_mesh::client::call(&self.conn, &req).await.map_err(|e| match e {
            river_mesh::client::ClientError::Framed(river_mesh::FramedError::Connection(c)) => {
                anyhow::anyhow!("lost the connection to the host before its answer: {c}{unsure}")
            }
            river_mesh::client::ClientError::Framed(river_mesh::FramedError::Ended) => {
                anyhow::anyhow!("the host closed the request without answering{unsure}")
            }
            other => anyhow::anyhow!("{other}"),
        })?;
        if let Response::Error { message, .. } = resp {
            bail!("{message}");
        }
        Ok(resp)
    }

    /// Opens a stream of `kind` to the host.
    pub async fn open(
        &self,
        kind: river_proto::StreamKind,
    ) -> anyhow::Result<(river_mesh::SendStream, river_mesh::RecvStream)> {
        Ok(river_mesh::open(&self.conn, kind).await?)
    }

    /// The connection itself, for datagrams.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether the connection to the host has ended.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Closes the connection, telling the host so it frees it at once. Only the close is waited
    /// for, not the draining period after it (three probe timeouts, ~80 ms even on loopback,
    /// which every command paid): the host needs the close frame, which goes out as soon as the
    /// endpoint's driver runs.
    pub async fn close(self) {
        self.conn.close(river_mesh::close::DONE, b"");
        let _ = tokio::time::timeout(CLOSE_SENT, self.endpoint.wait_idle()).await;
    }
}

/// How long a command waits for its close to go out before it exits.
const CLOSE_SENT: std::time::Duration = std::time::Duration::from_millis(5);

/// Connects, sends one request, closes.
pub async fn once(dir: &Path, req: Request) -> anyhow::Result<Response> {
    let client = Client::connect(dir).await?;
    let resp = client.call(req).await;
    client.close().await;
    resp
}

pub fn now_s() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Who this machine's credentials are: `user NAME`.
pub fn me(dir: &Path) -> anyhow::Result<String> {
    let bundle = river_creds::Bundle::load(dir)
        .map_err(|e| anyhow::anyhow!("no credentials in {} ({e}); `river login` first", dir.display()))?;
    Ok(bundle.meta.name)
}

/// The host's address as these credentials reach it (`HOST:PORT`), for commands to print ready
/// to paste; the placeholder when it cannot be read.
pub fn host_address(dir: &Path) -> String {
    river_creds::Bundle::load(dir).map_or_else(|_| "HOST:PORT".to_owned(), |b| b.meta.host)
}
