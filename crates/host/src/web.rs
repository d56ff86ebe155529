//! The web dashboard's side on the host: its pages, embedded in the binary (`web/`: one HTML page,
//! a script and a style sheet, no framework, no build step), and the live stream of the cluster's
//! events the pages follow (`GET /api/events`, server-sent events). Everything else the pages
//! show or do goes through the same API routes scripts use.

use crate::events::HostEvent;
use crate::Ctx;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// What a page may load and run: only its own script, style and API; no inline script, no
/// frames, no other origin.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's files: name → (content type, text).
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("web/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("web/style.css")),
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
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Headers every dashboard response carries.
fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
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
