//! `river ui`: the web dashboard on this machine's loopback, logged in as this CLI's user.
//!
//! The browser talks plain HTTP to `127.0.0.1` (a secure context for browsers: no certificate to
//! install, no warning); this process relays each request to the host over the mesh, on a
//! `StreamKind::Http` stream of the CLI's own connection, so the host sees the same user as for
//! any CLI call and authorizes it the same way — there is no second login or rule for the web.
//!
//! What keeps others out of it: the printed link carries a random key that logs one browser in,
//! once (a cookie then, `HttpOnly`, `SameSite=Strict`, named for the port); every request without
//! that cookie is refused; and every request that changes something must also carry the
//! page's anti-forgery token in a header (`X-River-CSRF`, from a second cookie only the page's
//! own script can read) and, when the browser says where it comes from, come from this origin.

use super::forward::Mesh;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use river_proto::msg::{Request as Rpc, Response as Reply};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

type Body = BoxBody<Bytes, hyper::Error>;

/// `river ui …`.
pub async fn command(a: crate::args::UiArgs, dir: &Path, output: crate::args::Output) -> anyhow::Result<()> {
    use crate::args::UiCmd;
    use crate::client::{now_s, once};
    use crate::output::{ago, show, table};
    match a.cmd {
        None if a.link => {
            let Reply::WebLink { url, expires_at_ms } = once(dir, Rpc::WebLink).await? else {
                anyhow::bail!("the host gave an unexpected answer");
            };
            eprintln!(
                "a login link for the dashboard at the host's own address: it logs one browser in as you, once; it expires {} (`river ui sessions` lists the browsers logged in)",
                ago(expires_at_ms / 1000, now_s())
            );
            println!("{url}");
            Ok(())
        }
        None => run(dir, a.port, !a.no_open).await,
        Some(UiCmd::Sessions { user }) => {
            let Reply::WebSessions(sessions) = once(dir, Rpc::WebSessions { user }).await? else {
                anyhow::bail!("the host gave an unexpected answer");
            };
            show(output, &sessions, |sessions| {
                if sessions.is_empty() {
                    eprintln!("no browser is logged in to the dashboard at the host's own address (`river ui --link` logs one in)");
                    return;
                }
                let now = now_s();
                let rows = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.user.clone(),
                            s.address.clone(),
                            ago(s.created_at_ms / 1000, now),
                            s.last_seen_ms.map_or("never".into(), |ms| ago(ms / 1000, now)),
                            ago(s.expires_at_ms / 1000, now),
                            s.agent.chars().take(40).collect(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "USER", "FROM", "LOGGED IN", "LAST SEEN", "EXPIRES", "BROWSER"],
                    rows,
                );
            })
        }
        Some(UiCmd::Revoke { id, all: _, user }) => {
            crate::cmd::vps::done(once(dir, Rpc::WebSessionRevoke { id, user }).await?)
        }
    }
}

/// One dashboard: its link's key (until used), the session it made, and the page's token.
struct Ui {
    mesh: Arc<Mesh>,
    origin: String,
    port: u16,
    key: Mutex<Option<String>>,
    session: String,
    csrf: String,
    /// Set by the page's "Log out": the session is spent, as the link is.
    logged_out: std::sync::atomic::AtomicBool,
}

pub async fn run(dir: &Path, port: u16, open: bool) -> anyhow::Result<()> {
    let mesh = Arc::new(Mesh::new(dir));
    // Fail now, with the reason, rather than in the browser.
    let client = mesh.client().await?;
    let Reply::WhoAmI { identity, .. } = client.call(Rpc::WhoAmI).await? else {
        anyhow::bail!("the host gave an unexpected answer to who you are");
    };
    tokio::spawn(super::forward::keep_renewed(mesh.clone()));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (in use? choose another with -p)"))?;
    let addr = listener.local_addr()?;
    let ui = Arc::new(Ui {
        mesh,
        origin: format!("http://{addr}"),
        port: addr.port(),
        key: Mutex::new(Some(random())),
        session: random(),
        csrf: random(),
        logged_out: Default::default(),
    });
    let link = format!(
        "{}/login?key={}",
        ui.origin,
        ui.key.lock().unwrap().as_deref().unwrap_or("")
    );
    eprintln!("the dashboard, as {identity}: {link}\n(the link logs one browser in, once; Ctrl-C stops)");
    // Machine-readable on stdout: the link alone.
    println!("{link}");
    if open {
        open_browser(&link);
    }
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let ui = ui.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ui = ui.clone();
                async move { Ok::<_, std::convert::Infallible>(ui.handle(req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!("dashboard connection: {e}");
            }
        });
    }
}

/// 32 random bytes, hex.
fn random() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the desktop's browser on `link`, if there is a desktop; the link is printed anyway.
fn open_browser(link: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(cmd) = opener {
        let started = std::process::Command::new(cmd)
            .arg(link)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = started {
            eprintln!("could not start a browser ({cmd}: {e}); open the link yourself");
        }
    }
}

fn text(status: StatusCode, kind: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn refused(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    text(status, "application/json", body)
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(req: &'a Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Ui {
    fn session_cookie(&self) -> String {
        format!("river_ui_{}", self.port)
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        if req.uri().path() == "/login" {
            return self.login(&req);
        }
        let logged_in = !self.logged_out.load(std::sync::atomic::Ordering::SeqCst)
            && cookie(&req, &self.session_cookie()).is_some_and(|s| same(s, &self.session));
        if !logged_in {
            let page = "<!doctype html><title>river</title><p>Not logged in to this dashboard. Open the link <code>river ui</code> printed (it works once), or run <code>river ui</code> again.</p>";
            return text(StatusCode::UNAUTHORIZED, "text/html; charset=utf-8", page.into());
        }
        // A WebSocket (the terminal) is opened with a GET: the browser always says from where.
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if upgrade && origin != Some(self.origin.as_str()) {
            tracing::warn!(?origin, "dashboard: refused a WebSocket from another page");
            return refused(
                StatusCode::FORBIDDEN,
                "refused: this connection did not come from the dashboard's own page",
            );
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let token = req.headers().get("x-river-csrf").and_then(|v| v.to_str().ok());
            let forged = !token.is_some_and(|t| same(t, &self.csrf)) || origin.is_some_and(|o| o != self.origin);
            if forged {
                tracing::warn!(path = %req.uri().path(), ?origin, "dashboard: refused a request that did not come from its page");
                return refused(
                    StatusCode::FORBIDDEN,
                    "refused: this request did not come from the dashboard's own page (its anti-forgery token is missing or wrong)",
                );
            }
        }
        if req.uri().path() == "/logout" && req.method() == Method::POST {
            self.logged_out.store(true, std::sync::atomic::Ordering::SeqCst);
            return text(StatusCode::OK, "application/json", r#"{"message":"logged out"}"#.into());
        }
        match self.relay(req).await {
            Ok(r) => r,
            Err(e) => refused(
                StatusCode::BAD_GATEWAY,
                &format!("the host could not be reached: {e:#}"),
            ),
        }
    }

    /// `/login?key=…`: the printed link. Its first use logs the browser in; it is spent then.
    fn login(&self, req: &Request<hyper::body::Incoming>) -> Response<Body> {
        let given = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .unwrap_or("");
        let spent = {
            let mut key = self.key.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match key.as_deref() {
                Some(k) if same(k, given) => key.take().is_some(),
                _ => false,
            }
        };
        if !spent {
            let page = "<!doctype html><title>river</title><p>This login link was used already, or is not this dashboard's. Run <code>river ui</code> again for a new one.</p>";
            return text(StatusCode::FORBIDDEN, "text/html; charset=utf-8", page.into());
        }
        let mut r = text(StatusCode::SEE_OTHER, "text/plain", String::new());
        let h = r.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
        let session = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.session_cookie(),
            self.session
        );
        let csrf = format!("river_csrf_{}={}; Path=/; SameSite=Strict", self.port, self.csrf);
        for c in [session, csrf] {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        r
    }

    /// Sends the request to the host on a stream of its own and hands back the answer as it
    /// comes (an event stream stays open).
    async fn relay(&self, mut req: Request<hyper::body::Incoming>) -> anyhow::Result<Response<Body>> {
        // What authenticates the browser here is not the host's business.
        req.headers_mut().remove(header::COOKIE);
        req.headers_mut().remove(header::AUTHORIZATION);
        let browser = hyper::upgrade::on(&mut req);
        let (send, recv) = self.mesh.stream(river_proto::StreamKind::Http).await?;
        let io = hyper_util::rt::TokioIo::new(tokio::io::join(recv, send));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("dashboard relay: {e}");
            }
        });
        let mut resp = sender.send_request(req).await?;
        // A connection the host upgrades (a WebSocket) is then relayed byte for byte, both ways.
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Only the upgrade: a `close` here would end the browser's side at once.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            let host = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(browser), Ok(host)) = (browser.await, host.await) else {
                    return;
                };
                let mut browser = hyper_util::rt::TokioIo::new(browser);
                let mut host = hyper_util::rt::TokioIo::new(host);
                let _ = tokio::io::copy_bidirectional(&mut browser, &mut host).await;
            });
        }
        Ok(resp.map(|b| b.boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab") && !same("", "a"));
        assert_eq!(random().len(), 64);
        assert_ne!(random(), random());
    }
}
