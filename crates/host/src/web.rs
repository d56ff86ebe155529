//! The web dashboard's side on the host: its pages, embedded in the binary (`web/`: one HTML page,
//! a script and a style sheet, no framework, no build step), and the live stream of the cluster's
//! events the pages follow (`GET /api/events`, server-sent events). Everything else the pages
//! show or do goes through the same API routes scripts use.

use crate::events::HostEvent;
use crate::Ctx;
use axum::extract::ws::{Message, WebSocket};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use river_mesh::{send_msg, RecvStream, SendStream};
use river_proto::msg::{TermIn, TermOut};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// What a page may load and run: only its own script, style and API; no inline script, no
/// frames, no other origin.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The terminal page's policy: the same, but xterm.js sets its own styles (a `<style>` it writes
/// for its colours and cell sizes), which only `'unsafe-inline'` styles allow. Scripts stay `'self'`.
const TERMINAL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The dashboard's files: name → (content type, text). xterm.js (and its fit addon) are vendored
/// unchanged with their licence (`web/vendor/xterm/`), and loaded by the terminal page only.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("web/index.html")),
    ("app.js", JS, include_str!("web/app.js")),
    ("pages.js", JS, include_str!("web/pages.js")),
    ("admin.js", JS, include_str!("web/admin.js")),
    ("style.css", CSS, include_str!("web/style.css")),
    ("terminal.html", HTML, include_str!("web/terminal.html")),
    ("terminal.js", JS, include_str!("web/terminal.js")),
    ("xterm.js", JS, include_str!("web/vendor/xterm/xterm.js")),
    ("xterm.css", CSS, include_str!("web/vendor/xterm/xterm.css")),
    ("addon-fit.js", JS, include_str!("web/vendor/xterm/addon-fit.js")),
];

/// One of the dashboard's files, with the headers that keep a page from being framed, sniffed or
/// made to run someone else's script; 404 for a name it does not have.
pub(crate) fn asset(name: &str) -> Response {
    let Some((_, kind, text)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut r = (*text).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    secure(h);
    if name == "terminal.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(TERMINAL_CSP));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Headers every dashboard response carries.
pub(crate) fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the page's own changes,
    // and the origin is how a change from another site is told apart. No other site learns
    // anything from `same-origin`.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// How often an idle event stream says it is still there (proxies close silent connections).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The cluster's events as server-sent events: `task` (`{"id","owner","state"}`), `node`
/// (`{"name","online"}`), `usage` (`{"name"}`: a node's usage was updated), and `resync` when the reader fell behind and missed some (the page then
/// reads everything again). The first event, `hello`, says the stream is live. Events name what
/// changed, never more than a task list shows; the page reads the rest through the API, as the
/// caller.
pub(crate) fn events(ctx: &Ctx) -> Response {
    let rx = ctx.events.subscribe();
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if first {
            return Some((
                Ok::<_, std::convert::Infallible>("event: hello\ndata: {}\n\n".to_owned()),
                (rx, false),
            ));
        }
        let text = match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Err(_) => ": still here\n\n".to_owned(),
            Ok(Ok(e)) => sse(&e),
            Ok(Err(RecvError::Lagged(_))) => "event: resync\ndata: {}\n\n".to_owned(),
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok(text), (rx, false)))
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

/// One event as the stream sends it.
fn sse(e: &HostEvent) -> String {
    let (kind, data) = match e {
        HostEvent::TaskChanged { id, owner, state } => (
            "task",
            serde_json::json!({ "id": id, "owner": owner, "state": state.as_str() }),
        ),
        HostEvent::NodeOnline { name, .. } => ("node", serde_json::json!({ "name": name, "online": true })),
        HostEvent::NodeOffline { name } => ("node", serde_json::json!({ "name": name, "online": false })),
        HostEvent::NodeUsage { name } => ("usage", serde_json::json!({ "name": name })),
    };
    format!("event: {kind}\ndata: {data}\n\n")
}

/// The browser terminal: a WebSocket bridged to a task's `Terminal` stream. From the browser,
/// binary messages are keystrokes and a text message `{"resize":{"rows":R,"cols":C}}` a new
/// window size; to it, binary messages are output and text messages say what happened —
/// `{"started":true}`, `{"exit":CODE}` or `{"error":"why"}` (each of the last two the end).
pub(crate) async fn terminal(
    ws: WebSocket,
    mut to_runner: SendStream,
    mut from_runner: RecvStream,
    ended: impl std::future::Future<Output = ()>,
) {
    use futures_util::{SinkExt as _, StreamExt as _};
    let (mut tx, mut rx) = ws.split();
    let down = async {
        let mut frames = river_mesh::MsgReader::new(&mut from_runner);
        loop {
            let msg = match frames.next::<TermOut>().await {
                Ok(Some(TermOut::Started)) => Message::Text(r#"{"started":true}"#.into()),
                Ok(Some(TermOut::Stdout(b) | TermOut::Stderr(b))) => Message::Binary(b.into()),
                Ok(Some(TermOut::Exit { code })) => {
                    let _ = tx.send(Message::Text(format!(r#"{{"exit":{code}}}"#).into())).await;
                    break;
                }
                Ok(Some(TermOut::Error(why))) => {
                    let _ = tx
                        .send(Message::Text(serde_json::json!({ "error": why }).to_string().into()))
                        .await;
                    break;
                }
                Ok(None) | Err(_) => {
                    let why = "the terminal was cut off (its node went away)";
                    let _ = tx
                        .send(Message::Text(serde_json::json!({ "error": why }).to_string().into()))
                        .await;
                    break;
                }
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    };
    let up = async {
        while let Some(Ok(msg)) = rx.next().await {
            let frame = match msg {
                Message::Binary(b) => TermIn::Input(b.to_vec()),
                Message::Text(t) => match serde_json::from_str::<Resize>(t.as_str()) {
                    Ok(Resize { resize }) => TermIn::Resize {
                        rows: resize.rows,
                        cols: resize.cols,
                    },
                    Err(_) => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if send_msg(&mut to_runner, &frame).await.is_err() {
                break;
            }
        }
        // The page went away: the session ends as a `river connect` whose user left.
        let _ = to_runner.finish();
        std::future::pending::<()>().await;
    };
    // `ended`: a dashboard session revoked or expired takes its terminals with it.
    tokio::select! {
        () = down => {}
        () = up => {}
        () = ended => {}
    }
}

#[derive(serde::Deserialize)]
struct Resize {
    resize: Size,
}

#[derive(serde::Deserialize)]
struct Size {
    rows: u16,
    cols: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_task::state::TaskState;

    #[test]
    fn events_are_told_as_server_sent_events() {
        let e = HostEvent::TaskChanged {
            id: 7,
            owner: "alice".into(),
            state: TaskState::Running,
        };
        assert_eq!(
            sse(&e),
            "event: task\ndata: {\"id\":7,\"owner\":\"alice\",\"state\":\"running\"}\n\n"
        );
        let off = HostEvent::NodeOffline { name: "n1".into() };
        assert_eq!(sse(&off), "event: node\ndata: {\"name\":\"n1\",\"online\":false}\n\n");
    }

    #[test]
    fn pages_come_with_a_strict_policy_and_unknown_files_do_not() {
        let r = asset("app.js");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(asset("../lib.rs").status(), StatusCode::NOT_FOUND);
        // No inline script anywhere in the page: the policy would refuse it.
        let (_, _, html) = ASSETS[0];
        assert!(!html.contains("<script>") && !html.contains("onclick="));
    }
}
