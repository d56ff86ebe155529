//! The dashboard at the host's own address (`[web]` in its config): HTTPS with the lab's
//! certificate, the same routes as the API (one authorization path: a browser session is one
//! more way to say who the caller is, next to a certificate, a token or the mesh), and the login
//! that turns a one-time link into a session ([`crate::web_logins`]).
//!
//! What keeps a forged request out: the session cookie is `SameSite=Strict`; every change must
//! carry the page's anti-forgery token in `X-River-CSRF` and, as the browser always says on a
//! change, come from this origin; a WebSocket (the terminal) must say it comes from this origin.

use super::WebCaller;
use crate::sessions::Closer;
use crate::web_logins::{self as login, CSRF_COOKIE, SESSION_COOKIE};
use crate::Ctx;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The address a connection comes from.
#[derive(Clone, Copy)]
struct Remote(SocketAddr);

/// The session a request came with (`/logout` ends it).
#[derive(Clone)]
struct SessionId(String);

/// Ends what a request of a dashboard session holds open (an event stream, a followed output, a
/// terminal) when the session is revoked, expires, or its user is cut off.
#[derive(Clone)]
pub(crate) struct Ending {
    end: tokio::sync::watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    _held: Arc<crate::sessions::Held>,
}

impl Ending {
    pub(crate) async fn wait(&self) {
        let mut end = self.end.clone();
        tokio::select! {
            _ = end.wait_for(|ended| *ended) => {}
            () = tokio::time::sleep_until(self.deadline) => {}
        }
    }
}

pub(crate) async fn serve(ctx: Arc<Ctx>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = app(ctx.clone());
    loop {
        let (tcp, remote, admitted) = super::accept::admit(&listener, &ctx.web_entrances).await;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            let Some(tls) = super::accept::handshake(&acceptor, tcp, remote).await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.layer(Extension(Remote(remote))));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%remote, "dashboard connection: {e}");
            }
        });
    }
}

fn app(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/login", get(login_page).post(log_in))
        .route("/logout", post(log_out))
        .fallback_service(crate::api::router(ctx.clone()))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

/// The value of cookie `name`.
fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// This site's origin as the browser names it: `https://` and the address it asked for.
fn own_origin(h: &HeaderMap) -> Option<String> {
    h.get(header::HOST)?.to_str().ok().map(|host| format!("https://{host}"))
}

/// Whether the request says it comes from this site (`Origin`, which browsers send with every
/// change and every WebSocket).
fn from_here(h: &HeaderMap) -> bool {
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    origin.is_some() && origin.map(str::to_owned) == own_origin(h)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// A small page of the login flow (no script; the dashboard's policy).
fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>river</title><link rel=stylesheet href=/ui/style.css><main class=login>{body}</main>"
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::web::secure(h);
    r
}

fn logged_out(why: &str) -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        &format!(
            "<h1>river</h1><p>Not logged in: {}.</p><p>Run <code>river ui --link</code> on a machine whose <code>river</code> is logged in, and open the link it prints (it works once, for 10 minutes).</p><p><a href=/login>New here, with an invitation?</a></p>",
            html_escape(why)
        ),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Who a request of a browser session is, checked before the API's routes see it.
async fn guard(State(ctx): State<Arc<Ctx>>, mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.uri().path() == "/login" {
        return next.run(req).await;
    }
    let Some(value) = cookie(req.headers(), SESSION_COOKIE).map(str::to_owned) else {
        // No session: a token or nothing; the API says what is missing.
        if req.uri().path() == "/" {
            return logged_out("this browser has no session here");
        }
        return next.run(req).await;
    };
    let session = match login::check(&ctx, &value).await {
        Ok(Ok(s)) => s,
        Ok(Err(why)) => {
            if req.uri().path() == "/" {
                return logged_out(why);
            }
            req.extensions_mut().insert(WebCaller(Err(why)));
            return next.run(req).await;
        }
        Err(e) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the host could not check the session: {e}"),
            )
        }
    };
    // A token, when given, is who asks: the cookie is not used, so no forgery is possible.
    if !req.headers().contains_key(header::AUTHORIZATION) {
        let h = req.headers();
        let change = !matches!(*req.method(), Method::GET | Method::HEAD);
        let token = h.get("x-river-csrf").and_then(|v| v.to_str().ok());
        let forged = (change && !(token.is_some_and(|t| same(t, &session.csrf)) && from_here(h)))
            || (h.contains_key(header::UPGRADE) && !from_here(h));
        if forged {
            tracing::warn!(path = %req.uri().path(), session = %session.id, "dashboard: refused a request that did not come from its page");
            return json(
                StatusCode::FORBIDDEN,
                "refused: this request did not come from the dashboard's own page (its anti-forgery token or origin is missing or wrong)",
            );
        }
    }
    let (end, rx) = tokio::sync::watch::channel(false);
    let closer = Closer::Web {
        session: session.id.clone(),
        end: Arc::new(end),
    };
    let Some(held) = ctx.sessions.hold(&session.user, closer) else {
        return json(
            StatusCode::TOO_MANY_REQUESTS,
            "you have too many connections open to the host; close some (tabs, forwards, terminals)",
        );
    };
    let wait_ms = u64::try_from(session.expires_at_ms - ctx.clock.now_ms()).unwrap_or(0);
    let ending = Ending {
        end: rx,
        deadline: tokio::time::Instant::now() + Duration::from_millis(wait_ms),
        _held: Arc::new(held),
    };
    let caller = crate::auth::Caller::User {
        name: session.user,
        role: session.role,
    };
    req.extensions_mut().insert(WebCaller(Ok(caller)));
    req.extensions_mut().insert(SessionId(session.id));
    req.extensions_mut().insert(ending.clone());
    let resp = next.run(req).await;
    // A body that goes on (events, followed output) ends with the session: cut, not completed.
    if resp.body().size_hint().exact().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let data = body.into_data_stream();
    let cut = futures_util::stream::unfold((data, Some(ending)), |(mut data, ending)| async move {
        let ending = ending?;
        tokio::select! {
            item = futures_util::StreamExt::next(&mut data) => {
                item.map(|i| (i.map_err(std::io::Error::other), (data, Some(ending))))
            }
            () = ending.wait() => Some((Err(std::io::Error::other("the dashboard session ended")), (data, None))),
        }
    });
    Response::from_parts(parts, Body::from_stream(cut))
}

#[derive(serde::Deserialize)]
struct LinkKey {
    key: Option<String>,
    invite: Option<String>,
}

/// Whether `s` could be a link's key or an invitation's text (no markup, nothing to escape).
fn plausible(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `GET /login?key=…` (a link from `river ui --link`) or `?invite=…`: the page asks before the
/// link is spent, so a mail scanner or a chat's preview that fetches links cannot use it up.
/// Without either, it says how to log in, and takes an invitation pasted in.
async fn login_page(Query(q): Query<LinkKey>) -> Response {
    let form = |field: &str, value: &str, button: &str, note: &str| {
        format!(
            "<form method=post action=/login><input type=hidden name={field} value=\"{value}\"><button id=login type=submit>{button}</button></form><p class=muted>{note}</p>"
        )
    };
    let body = match (q.key.as_deref(), q.invite.as_deref()) {
        (Some(k), _) if plausible(k) => format!(
            "<h1>river</h1><p>Log this browser in to the dashboard?</p>{}",
            form("key", k, "Log in", "The link works once, for 10 minutes.")
        ),
        (None, Some(i)) if plausible(i) => format!(
            "<h1>river</h1><p>You are invited to this cluster. Accept, and this browser is logged in as the user the invitation names.</p>{}",
            form("invite", i, "Accept the invitation", "For the command line too, ask an admin for <code>river user reissue NAME</code> later.")
        ),
        (None, None) => "<h1>river</h1><p>To log in, run <code>river ui --link</code> on a machine whose <code>river</code> is logged in, and open the link it prints.</p><p>New here, with an invitation from an admin?</p><form method=post action=/login><input id=invite name=invite placeholder=\"rvt1.…\" size=60 autocomplete=off><button id=accept type=submit>Accept</button></form>".to_owned(),
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "<h1>river</h1><p>This is not a whole login link: copy all of what <code>river ui --link</code> printed.</p>",
            )
        }
    };
    page(StatusCode::OK, &body)
}

/// `POST /login` (the forms above): spends the link, or accepts the invitation, and starts the
/// session.
async fn log_in(
    State(ctx): State<Arc<Ctx>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    body: String,
) -> Response {
    // Logging someone in to another account from another site is refused too.
    if !from_here(&headers) {
        return page(
            StatusCode::FORBIDDEN,
            "<h1>river</h1><p>Refused: this login did not come from this site's own page.</p>",
        );
    }
    let field = |name: &str| {
        body.split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .filter(|v| plausible(v))
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let address = remote.ip().to_string();
    let started = match (field("key"), field("invite")) {
        (Some(key), _) => login::start(&ctx, &key, &address, agent)
            .await
            .map(|r| r.map_err(str::to_owned)),
        (None, Some(invite)) => match crate::join::accept_in_browser(&ctx, &invite, &address).await {
            Ok((user, role)) => login::begin(&ctx, user, role, &address, agent).await.map(Ok),
            Err(why) => Ok(Err(why)),
        },
        (None, None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "<h1>river</h1><p>No login link or invitation was given.</p>",
            )
        }
    };
    let started = match started {
        Ok(Ok(s)) => s,
        Ok(Err(why)) => {
            return page(
                StatusCode::FORBIDDEN,
                &format!("<h1>river</h1><p>{}.</p>", html_escape(why.trim_end_matches('.'))),
            )
        }
        Err(e) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the host could not start the session: {e}"),
            )
        }
    };
    // A page that goes on by itself rather than a redirect: a navigation this site starts sends
    // its `SameSite=Strict` cookie, one that began at a mail or chat link would not.
    let mut r = page(
        StatusCode::OK,
        "<meta http-equiv=refresh content=\"0;url=/\"><h1>river</h1><p>Logged in. <a href=/>Open the dashboard</a>.</p>",
    );
    let cookies = [
        format!(
            "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            started.cookie, started.max_age_s
        ),
        format!(
            "{CSRF_COOKIE}={}; Path=/; Secure; SameSite=Strict; Max-Age={}",
            started.csrf, started.max_age_s
        ),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// `POST /logout`: ends this browser's session (the page's token required, as for any change).
async fn log_out(
    State(ctx): State<Arc<Ctx>>,
    session: Option<Extension<SessionId>>,
    caller: Option<Extension<WebCaller>>,
) -> Response {
    let (Some(Extension(SessionId(id))), Some(Extension(WebCaller(Ok(caller))))) = (session, caller) else {
        return json(StatusCode::UNAUTHORIZED, "this browser is not logged in");
    };
    if let Err(e) = login::revoke(&ctx, &caller, Some(id), None).await {
        let (_, message) = e.kind_and_message();
        return json(StatusCode::SERVICE_UNAVAILABLE, &message);
    }
    let mut r = (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "message": "logged out" })),
    )
        .into_response();
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        if let Ok(v) = HeaderValue::from_str(&format!("{name}=; Path=/; Secure; SameSite=Strict; Max-Age=0")) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}
