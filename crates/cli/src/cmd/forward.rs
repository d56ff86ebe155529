//! `river forward`: a local listener whose every connection becomes its own `Forward` stream to a
//! port inside a task. The listener outlives the host: when the mesh connection drops, the next
//! local connection dials the host again.

use crate::client::Client;
use anyhow::{bail, Context as _};
use river_mesh::{recv_msg, send_msg};
use river_proto::msg::{ForwardOpen, ForwardReply};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The connection to the host, made again when it has dropped.
pub struct Mesh {
    dir: PathBuf,
    client: Mutex<Option<Arc<Client>>>,
}

impl Mesh {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            client: Mutex::new(None),
        }
    }

    pub async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let mut c = self.client.lock().await;
        if let Some(existing) = c.as_ref().filter(|c| !c.is_closed()) {
            return Ok(existing.clone());
        }
        let fresh = Arc::new(Client::connect(&self.dir).await?);
        *c = Some(fresh.clone());
        Ok(fresh)
    }

    async fn forget(&self, stale: &Arc<Client>) {
        let mut c = self.client.lock().await;
        if c.as_ref().is_some_and(|x| Arc::ptr_eq(x, stale)) {
            *c = None;
        }
    }

    /// A `Forward` stream the host has accepted, retrying once on a fresh connection when the
    /// current one turns out to be dead.
    pub async fn open(&self, req: &ForwardOpen) -> anyhow::Result<(river_mesh::SendStream, river_mesh::RecvStream)> {
        for attempt in 0..2 {
            let client = self.client().await?;
            let opened = async {
                let (mut send, mut recv) = client.open(river_proto::StreamKind::Forward).await?;
                send_msg(&mut send, req).await?;
                let reply = recv_msg::<ForwardReply>(&mut recv).await?;
                anyhow::Ok((send, recv, reply))
            }
            .await;
            match opened {
                Ok((send, recv, Some(ForwardReply::Ok))) => return Ok((send, recv)),
                Ok((_, _, Some(ForwardReply::Refused(why)))) => bail!("{why}"),
                Ok((_, _, None)) => bail!("the host closed the stream without answering"),
                Err(e) if attempt == 0 => {
                    tracing::debug!("reconnecting to the host: {e}");
                    self.forget(&client).await;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }
}

pub async fn run(dir: &Path, task: u64, port: u16, local: Option<u16>, bind: IpAddr) -> anyhow::Result<()> {
    let mesh = Arc::new(Mesh::new(dir));
    // Fail now, with the reason, rather than at the first connection.
    let client = mesh.client().await?;
    crate::cmd::connect::wait_running(&client, task).await?;
    let addr = SocketAddr::new(bind, local.unwrap_or(port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} here (in use? choose another local port with -l)"))?;
    let bound = listener.local_addr()?;
    eprintln!("forwarding {bound} → port {port} of task {task}; Ctrl-C stops");
    // Machine-readable on stdout: the local address, so scripts can use `-l 0`.
    println!("{bound}");
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let req = ForwardOpen { task, port };
            match mesh.open(&req).await {
                Ok((send, recv)) => {
                    if let Err(e) = river_mesh::splice(tcp, send, recv).await {
                        tracing::debug!(%peer, "forwarded connection ended: {e}");
                    }
                }
                Err(e) => eprintln!("connection from {peer}: {e:#}"),
            }
        });
    }
}
