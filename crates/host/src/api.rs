//! The HTTPS API for scripts and the dashboard. TLS from the cluster CA; callers authenticate
//! with a user certificate (`curl --cert`). Each route turns into a [`Request`] handled by
//! [`crate::rpc`], so the API and the CLI share authorization and behaviour, and errors map to
//! HTTP statuses in one place ([`status_of`]). The routes are described in `openapi.json`.

mod accept;
mod admin;
mod envs;
mod public;
pub(crate) use public::serve as serve_at_own_address;

use crate::auth::Caller;
use crate::{rpc, Ctx};
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use river_mesh::Peer;
use river_pki::Subject;
use river_proto::msg::{ErrorKind, Request, Response};
use river_proto::msg::{Signal, TaskSpec};
use std::sync::Arc;
use std::time::Duration;

/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The OpenAPI description of these routes, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Who is asking, resolved for each request ([`resolve`]), or why no one is.
#[derive(Clone)]
struct ApiCaller(Result<Caller, &'static str>);

const NO_CALLER: &str = "this endpoint needs a river user certificate (curl --cacert ca.crt --cert cert.pem --key key.pem, files from `river login`) or an API token (-H 'Authorization: Bearer rvk1.…', from `river user token create`)";

/// The certificate a connection presented, kept for the connection's life.
#[derive(Clone)]
struct PeerCert(Peer);

/// The user whose mesh connection carries this HTTP connection (a `StreamKind::Http` stream).
#[derive(Clone)]
struct MeshUser(String);

/// Who a browser session at the host's own address is, or why it is no one (`web::login`).
#[derive(Clone)]
pub(crate) struct WebCaller(pub(crate) Result<Caller, &'static str>);

pub(crate) async fn serve(ctx: Arc<Ctx>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(ctx.clone());
    loop {
        let (tcp, remote, admitted) = accept::admit(&listener, &ctx.entrances).await;
        let (acceptor, app, ctx) = (acceptor.clone(), app.clone(), ctx.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            // The SSH gateway shares the port: SSH clients speak first, with `SSH-`.
            if crate::gateway::is_ssh(&tcp).await {
                return crate::gateway::serve(ctx, tcp, remote).await;
            }
            let Some(tls) = accept::handshake(&acceptor, tcp, remote).await else {
                return;
            };
            let peer = river_mesh::peer_of_certs(tls.get_ref().1.peer_certificates());
            // Only a certificate holder keeps a connection open between requests; everyone
            // has 10 s to send a request's headers.
            let known = matches!(peer, Peer::Known(Subject::User(_), _));
            let svc = hyper_util::service::TowerToHyperService::new(app.layer(Extension(PeerCert(peer))));
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(known)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(%remote, "API connection: {e}");
            }
        });
    }
}

/// Serves one HTTP/1.1 connection carried by a mesh stream of `user`'s connection (`river ui`
/// relays the dashboard's requests this way): the same routes and rules as the HTTPS port, the
/// caller being that user (read again for each request, like a certificate's).
pub(crate) async fn serve_stream(
    ctx: Arc<Ctx>,
    user: String,
    send: river_mesh::SendStream,
    recv: river_mesh::RecvStream,
) {
    let app = router(ctx).layer(Extension(MeshUser(user.clone())));
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let io = hyper_util::rt::TokioIo::new(tokio::io::join(recv, send));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // Not `keep_alive(false)`: its `Connection: close` would also end an upgraded connection
        // (the terminal's WebSocket). The relay sends one request per stream and then closes it.
        .serve_connection(io, svc)
        .with_upgrades()
        .await
    {
        tracing::debug!(%user, "HTTP over the mesh: {e}");
    }
}

/// The user `name` as they are now, unless removed or disabled.
async fn user_caller(ctx: &Ctx, name: String) -> Option<Caller> {
    let user = ctx.store.user(&name).await.ok()??;
    (!user.disabled).then_some(Caller::User { name, role: user.role })
}

/// API callers are users with a current certificate; nodes have no business here.
async fn caller(ctx: &Ctx, peer: Peer) -> Option<Caller> {
    let Peer::Known(Subject::User(name), info) = peer else {
        return None;
    };
    if ctx.store.is_revoked(&info.serial).await.unwrap_or(true) {
        return None;
    }
    user_caller(ctx, name).await
}

pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/", get(|| async { crate::web::asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(f): Path<String>| async move { crate::web::asset(&f) }),
        )
        .route("/api/events", get(events))
        .route("/api/whoami", get(|s, c| call(s, c, Request::WhoAmI)))
        .route("/api/status", get(|s, c| call(s, c, Request::Status)))
        .route("/api/nodes", get(|s, c| call(s, c, Request::NodeList)))
        .route("/api/nodes/{name}", get(node))
        .route(
            "/api/nodes/{name}/usage",
            get(|s, c, Path(name): Path<String>| call(s, c, Request::NodeUsage { name })),
        )
        .route("/api/envs", get(|s, c| call(s, c, Request::EnvList)))
        .route("/api/overlay", get(|s, c| call(s, c, Request::Overlay)))
        .route("/api/audit", get(audit))
        .route("/api/tasks", get(tasks).post(submit))
        .route("/api/tasks/{id}", get(task))
        .route("/api/tasks/{id}/logs", get(task_logs))
        .route(
            "/api/tasks/{id}/history",
            get(|s, c, Path(id): Path<u64>| call(s, c, Request::TaskHistory { id })),
        )
        .route("/api/tasks/{id}/output", get(task_output))
        .route("/api/tasks/{id}/terminal", get(task_terminal))
        .route(
            "/api/tasks/{id}/snapshots",
            get(|s, c, Path(id): Path<u64>| call(s, c, Request::VpsSnapshots { id })),
        )
        .route(
            "/api/tasks/{id}/snapshots/{seq}",
            axum::routing::delete(|s, c, Path((id, seq)): Path<(u64, u32)>| {
                call(s, c, Request::VpsSnapshotRm { id, seq })
            }),
        )
        .route(
            "/api/tasks/{id}/snapshots/{seq}/restore",
            post(|s, c, Path((id, seq)): Path<(u64, u32)>| call(s, c, Request::VpsRestore { id, seq })),
        )
        .route("/api/tasks/{id}/{action}", post(task_signal))
        .merge(admin::routes())
        .merge(envs::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; GET /api/openapi.json lists them") })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), resolve))
        .with_state(ctx)
}

/// Reads who the connection's certificate names for every request, not once per connection: a
/// certificate revoked (a reissued user) or a role changed meanwhile counts from the next request
/// of a kept-alive connection.
async fn resolve(
    State(ctx): State<Arc<Ctx>>,
    peer: Option<Extension<PeerCert>>,
    mesh: Option<Extension<MeshUser>>,
    web: Option<Extension<WebCaller>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> HttpResponse {
    // A bearer token, when given, is who asks, whatever certificate the connection has.
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let who = match (bearer, peer) {
        (Some(value), _) => match value.strip_prefix("Bearer ") {
            Some(token) => match crate::api_tokens::caller(&ctx, token).await {
                Ok(who) => who,
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("the host could not check the token: {e}"),
                    )
                }
            },
            None => Err("the Authorization header takes `Bearer rvk1.…` (an API token)"),
        },
        (None, Some(Extension(PeerCert(p)))) => caller(&ctx, p).await.ok_or(NO_CALLER),
        (None, None) => match (mesh, web) {
            (Some(Extension(MeshUser(name))), _) => user_caller(&ctx, name).await.ok_or(NO_CALLER),
            (None, Some(Extension(WebCaller(who)))) => who,
            (None, None) => Err(NO_CALLER),
        },
    };
    req.extensions_mut().insert(ApiCaller(who));
    next.run(req).await
}

/// Every error is a JSON `{"error": …}`, whoever made it: a refusal of the services, or a request
/// the router or an extractor turned down (a path or query that does not parse, a body that is not
/// JSON, a method a route does not take), whose text becomes the message.
async fn json_errors(resp: HttpResponse) -> HttpResponse {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_lowercase(),
        t => t.to_owned(),
    };
    error(status, &message)
}

/// The cluster's events, live, for anyone who may see its status.
async fn events(State(ctx): State<Arc<Ctx>>, Extension(ApiCaller(caller)): Extension<ApiCaller>) -> HttpResponse {
    let caller = match caller {
        Ok(c) => c,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why),
    };
    if let Err(why) = rpc::authorize(&caller, &Request::Status) {
        return error(StatusCode::FORBIDDEN, &why);
    }
    crate::web::events(&ctx)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn node(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Path(name): Path<String>) -> HttpResponse {
    call(s, c, Request::NodeShow { name }).await
}

#[derive(serde::Deserialize)]
struct AuditFilter {
    user: Option<String>,
    since_ms: Option<i64>,
    limit: Option<u32>,
}

async fn audit(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Query(f): Query<AuditFilter>) -> HttpResponse {
    let limit = f.limit.unwrap_or(100);
    call(
        s,
        c,
        Request::Audit {
            user: f.user,
            since_ms: f.since_ms,
            limit,
        },
    )
    .await
}

#[derive(serde::Deserialize)]
struct TaskFilter {
    state: Option<String>,
    node: Option<String>,
    before: Option<u64>,
    limit: Option<u32>,
    #[serde(default)]
    vps: bool,
    /// A user's name: only their tasks.
    owner: Option<String>,
}

async fn tasks(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Query(f): Query<TaskFilter>) -> HttpResponse {
    call(
        s,
        c,
        Request::TaskList {
            state: f.state,
            node: f.node,
            before: f.before,
            limit: f.limit,
            vps: f.vps,
            owner: f
                .owner
                .map(|o| if o.starts_with("user ") { o } else { format!("user {o}") }),
        },
    )
    .await
}

async fn submit(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Body(spec): Body<TaskSpec>) -> HttpResponse {
    call(s, c, Request::TaskSubmit(spec)).await
}

/// A request body as it must come: a JSON object read as a `T` (serde would also take an array
/// of the fields in order, which the document does not allow), or a 400 saying what is wrong.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = HttpResponse;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(object) = Json::<serde_json::Map<String, serde_json::Value>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        serde_json::from_value(serde_json::Value::Object(object))
            .map(Body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("the request body: {e}")))
    }
}

async fn task(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Path(id): Path<u64>) -> HttpResponse {
    call(s, c, Request::TaskShow { id }).await
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    stderr: bool,
    /// `/output` only: go on with the output as it comes, until the task ends.
    #[serde(default)]
    follow: bool,
}

async fn task_logs(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path(id): Path<u64>,
    Query(q): Query<LogsQuery>,
) -> HttpResponse {
    call(s, c, Request::TaskLogs { id, stderr: q.stderr }).await
}

/// A task's output as it is kept on its node, streamed as plain text however large. Output cut
/// short (the node went away, or it is incomplete) ends the response without its last chunk, so
/// an HTTP client reports an error rather than a complete body.
async fn task_output(
    State(ctx): State<Arc<Ctx>>,
    Extension(ApiCaller(caller)): Extension<ApiCaller>,
    Path(id): Path<u64>,
    Query(q): Query<LogsQuery>,
) -> HttpResponse {
    let caller = match caller {
        Ok(c) => c,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why),
    };
    if let Err(why) = rpc::authorize(&caller, &Request::TaskLogs { id, stderr: q.stderr }) {
        return error(StatusCode::FORBIDDEN, &why);
    }
    let recv = match crate::logs::open_logs(&ctx, &caller, id, q.stderr, q.follow).await {
        Ok(Some(recv)) => recv,
        // Not started: no output yet; following it is refused (as `river task logs -f` is).
        Ok(None) if q.follow => {
            return error(
                StatusCode::CONFLICT,
                &format!("task {id} has not started yet; it has no output"),
            )
        }
        Ok(None) => return ([(header::CONTENT_TYPE, "text/plain")], "").into_response(),
        Err(e) => {
            let (kind, message) = e.kind_and_message();
            return error(status_of(&kind), &message);
        }
    };
    // After an error the stream ends: the error is the last thing the body sees.
    let chunks = futures_util::stream::unfold(Some(recv), |recv| async move {
        let mut recv = recv?;
        match recv.read_chunk(256 << 10, true).await {
            Ok(Some(c)) => Some((Ok::<_, std::io::Error>(c.bytes), Some(recv))),
            Ok(None) => None,
            Err(e) => Some((
                Err(std::io::Error::other(format!("the output was cut short: {e}"))),
                None,
            )),
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TerminalQuery {
    #[serde(default)]
    rows: u16,
    #[serde(default)]
    cols: u16,
}

/// A terminal in a running task, over a WebSocket (the dashboard's; `web::terminal` says what
/// travels on it): a shell with a pseudo-terminal, reached as `river connect` reaches it.
async fn task_terminal(
    State(ctx): State<Arc<Ctx>>,
    Extension(ApiCaller(caller)): Extension<ApiCaller>,
    Path(id): Path<u64>,
    Query(q): Query<TerminalQuery>,
    ending: Option<Extension<public::Ending>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> HttpResponse {
    let caller = match caller {
        Ok(c) => c,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why),
    };
    let req = river_proto::msg::TerminalOpen {
        task: id,
        command: Vec::new(),
        tty: true,
        rows: q.rows,
        cols: q.cols,
    };
    // Opened before the upgrade, so that a refusal is an HTTP answer with its reason.
    match crate::terminal::open_terminal(&ctx, &caller, &req).await {
        Ok((to_runner, from_runner)) => ws
            .on_upgrade(move |socket| {
                let ended = async move {
                    match ending {
                        Some(Extension(e)) => e.wait().await,
                        None => std::future::pending().await,
                    }
                };
                crate::web::terminal(socket, to_runner, from_runner, ended)
            })
            .into_response(),
        Err(e) => {
            let (kind, message) = e.kind_and_message();
            error(status_of(&kind), &message)
        }
    }
}

#[derive(serde::Deserialize)]
struct ActionQuery {
    reason: Option<String>,
    /// `snapshot`: what it is, for the list.
    message: Option<String>,
}

async fn task_signal(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path((id, action)): Path<(u64, String)>,
    Query(q): Query<ActionQuery>,
) -> HttpResponse {
    let signal = match action.as_str() {
        "kill" => Signal::Kill,
        "pause" => Signal::Pause,
        "resume" => Signal::Resume,
        "stop" => Signal::Stop,
        // VPSs: start a stopped one again, remove one with its disk.
        "start" => return call(s, c, Request::VpsStart { id, on: None }).await,
        "remove" => return call(s, c, Request::VpsRemove { id }).await,
        "snapshot" => return call(s, c, Request::VpsSnapshot { id, message: q.message }).await,
        // Operators, for tasks waiting for approval.
        "approve" => return call(s, c, Request::TaskApprove { id }).await,
        "reject" => {
            let reason = q.reason.unwrap_or_default();
            return call(s, c, Request::TaskReject { id, reason }).await;
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "no such action; use kill, pause or resume (for a VPS stop, start, remove or snapshot; for a task waiting for approval approve, or reject?reason=…)",
            )
        }
    };
    call(s, c, Request::TaskSignal { id, signal }).await
}

/// The one place an error becomes an HTTP status.
fn status_of(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn call(
    State(ctx): State<Arc<Ctx>>,
    Extension(ApiCaller(caller)): Extension<ApiCaller>,
    req: Request,
) -> HttpResponse {
    let caller = match caller {
        Ok(c) => c,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why),
    };
    let body = match rpc::handle(&ctx, &caller, req).await {
        Response::Error { kind, message } => return error(status_of(&kind), &message),
        Response::Done { message } => serde_json::json!({ "message": message }),
        Response::WhoAmI { identity, role } => serde_json::json!({ "identity": identity, "role": role }),
        Response::Status(s) => serde_json::json!(s),
        Response::Nodes(n) => serde_json::json!(n),
        Response::Node(n) => serde_json::json!(n),
        Response::TokenCreated(t) => serde_json::json!(t),
        Response::Tokens(t) => serde_json::json!(t),
        Response::Users(u) => serde_json::json!(u),
        Response::Renewed { cert_pem } => serde_json::json!({ "cert_pem": cert_pem }),
        Response::TaskSubmitted { batch, ids } => serde_json::json!({ "batch": batch, "ids": ids }),
        Response::Tasks { tasks, .. } => serde_json::json!(tasks),
        Response::Task(t) => serde_json::json!(t),
        Response::Logs(bytes) => serde_json::json!({ "logs": String::from_utf8_lossy(&bytes) }),
        Response::Env(e) => serde_json::json!(e),
        Response::Envs(e) => serde_json::json!(e),
        Response::EnvSession { task, started } => serde_json::json!({ "task": task, "started": started }),
        Response::Events(events) => serde_json::json!(events
            .iter()
            .map(|e| serde_json::json!({ "at_ms": e.at_ms, "actor": e.actor, "action": e.action, "detail": e.detail }))
            .collect::<Vec<_>>()),
        Response::IpReserved(r) => serde_json::json!(r),
        Response::Ips(ips) => serde_json::json!(ips),
        Response::Overlay(o) => serde_json::json!(o),
        Response::Snapshot(s) => serde_json::json!(s),
        Response::Snapshots(s) => serde_json::json!(s),
        Response::UserKeys(k) => serde_json::json!(k),
        Response::ApiTokenCreated(t) => serde_json::json!(t),
        Response::ApiTokens(t) => serde_json::json!(t),
        Response::UserLimits(l) => serde_json::json!(l),
        Response::Progress(p) => serde_json::json!(p),
        Response::Usage(u) => serde_json::json!(u),
        Response::WebLink { url, expires_at_ms } => serde_json::json!({ "url": url, "expires_at_ms": expires_at_ms }),
        Response::WebSessions(s) => serde_json::json!(s),
        Response::TaskHistory(h) => serde_json::json!(h),
        Response::SharedWith(u) => serde_json::json!(u),
    };
    Json(body).into_response()
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod openapi_tests;
