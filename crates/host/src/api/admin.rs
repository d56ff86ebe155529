//! The API's routes for running the cluster and one's own account (the dashboard's admin and
//! account pages use them): people, invitations, join tokens, removing nodes; one's API tokens,
//! dashboard sessions and login links;
//! the keys of a VPS. Each becomes the same `Request` as the CLI's
//! command, so who may do what is decided where it is for the CLI (`rpc::authorize`, `users`).

use super::{call, ApiCaller, Body};
use crate::Ctx;
use axum::extract::{Path, Query, State};
use axum::response::Response as HttpResponse;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use river_proto::msg::{LimitValues, Request, Role};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/api/users", get(|s, c| call(s, c, Request::UserList)).post(invite))
        .route("/api/users/{name}", delete(remove_user))
        .route("/api/users/{name}/role", post(set_role))
        .route(
            "/api/users/{name}/limits",
            get(|s, c, Path(name): Path<String>| call(s, c, limits_of(Some(name)))).post(set_limits),
        )
        .route("/api/me/limits", get(|s, c| call(s, c, limits_of(None))))
        .route("/api/users/{name}/{switch}", post(switch_user))
        .route(
            "/api/tokens",
            get(|s, c| call(s, c, Request::TokenList)).post(join_token),
        )
        .route(
            "/api/tokens/{id}",
            delete(|s, c, Path(id): Path<String>| call(s, c, Request::TokenRevoke { id })),
        )
        .route(
            "/api/nodes/{name}",
            delete(|s, c, Path(name): Path<String>| call(s, c, Request::NodeRemove { name })),
        )
        .route(
            "/api/me/tokens",
            get(|s, c| call(s, c, Request::ApiTokenList { user: None })).post(api_token),
        )
        .route(
            "/api/me/tokens/{name}",
            delete(|s, c, Path(name): Path<String>| call(s, c, Request::ApiTokenRevoke { name, user: None })),
        )
        .route(
            "/api/me/sessions",
            get(|s, c| call(s, c, Request::WebSessions { user: None })),
        )
        .route(
            "/api/me/sessions/{id}",
            delete(|s, c, Path(id): Path<String>| {
                call(
                    s,
                    c,
                    Request::WebSessionRevoke {
                        id: Some(id),
                        user: None,
                    },
                )
            }),
        )
        .route("/api/me/login-link", post(|s, c| call(s, c, Request::WebLink)))
        .route("/api/tasks/{id}/keys", post(vps_keys))
        .route(
            "/api/tasks/{id}/shares",
            get(|s, c, Path(id): Path<u64>| call(s, c, Request::VpsShares { id })),
        )
        .route(
            "/api/tasks/{id}/shares/{user}",
            axum::routing::put(|s, c, Path((id, user)): Path<(u64, String)>| {
                call(s, c, Request::VpsShare { id, user, share: true })
            })
            .delete(|s, c, Path((id, user)): Path<(u64, String)>| {
                call(s, c, Request::VpsShare { id, user, share: false })
            }),
        )
}

#[derive(serde::Deserialize)]
struct NewApiToken {
    name: String,
    ttl_secs: Option<u64>,
    role: Option<Role>,
}

/// How long an API token is good for unless told: 90 days.
const API_TOKEN_TTL_SECS: u64 = 90 * 24 * 60 * 60;

/// `river user token create`: a token for scripts, acting as the caller, shown this once.
async fn api_token(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Body(t): Body<NewApiToken>) -> HttpResponse {
    let req = Request::ApiTokenCreate {
        name: t.name,
        ttl_secs: t.ttl_secs.unwrap_or(API_TOKEN_TTL_SECS),
        role: t.role,
    };
    call(s, c, req).await
}

#[derive(serde::Deserialize)]
struct KeyChange {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// `river vps keys add|rm`: the SSH keys that may log in to a VPS, from its next login on.
async fn vps_keys(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path(id): Path<u64>,
    Body(k): Body<KeyChange>,
) -> HttpResponse {
    let req = Request::VpsKeys {
        id,
        add: k.add,
        remove: k.remove,
    };
    call(s, c, req).await
}

/// How long an invitation or a join token is good for unless told.
const DEFAULT_TTL_SECS: u64 = 24 * 60 * 60;

#[derive(serde::Deserialize)]
struct Invite {
    name: String,
    role: Role,
    ttl_secs: Option<u64>,
}

/// `river user invite NAME --role ROLE`: the invitation's token, shown this once.
async fn invite(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Body(i): Body<Invite>) -> HttpResponse {
    let req = Request::UserInvite {
        name: i.name,
        role: i.role,
        ttl_secs: i.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
    };
    call(s, c, req).await
}

#[derive(serde::Deserialize)]
struct NewRole {
    role: Role,
}

async fn set_role(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(r): Body<NewRole>,
) -> HttpResponse {
    call(s, c, Request::UserSetRole { name, role: r.role }).await
}

/// Reading a user's limits (the caller's own with `None`) is the request that sets none.
fn limits_of(name: Option<String>) -> Request {
    Request::UserLimits {
        name,
        set: LimitValues::default(),
        reset: false,
    }
}

#[derive(serde::Deserialize)]
struct NewLimits {
    #[serde(flatten)]
    set: LimitValues,
    #[serde(default)]
    reset: bool,
}

/// `river user limits NAME --running-cores 8 …`: the values given (0: no limit), or `reset`.
async fn set_limits(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path(name): Path<String>,
    Body(l): Body<NewLimits>,
) -> HttpResponse {
    let req = Request::UserLimits {
        name: Some(name),
        set: l.set,
        reset: l.reset,
    };
    call(s, c, req).await
}

/// `…/disable` or `…/enable`.
async fn switch_user(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path((name, switch)): Path<(String, String)>,
) -> HttpResponse {
    let enabled = match switch.as_str() {
        "enable" => true,
        "disable" => false,
        _ => {
            return super::error(
                axum::http::StatusCode::NOT_FOUND,
                "no such action; use enable, disable or role",
            )
        }
    };
    call(s, c, Request::UserEnable { name, enabled }).await
}

#[derive(serde::Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    kill_tasks: bool,
}

async fn remove_user(
    s: State<Arc<Ctx>>,
    c: Extension<ApiCaller>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> HttpResponse {
    call(
        s,
        c,
        Request::UserRemove {
            name,
            kill_tasks: q.kill_tasks,
        },
    )
    .await
}

#[derive(serde::Deserialize)]
struct JoinToken {
    ttl_secs: Option<u64>,
    uses: Option<u32>,
}

/// `river token create`: a join token for new nodes, shown this once.
async fn join_token(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Body(t): Body<JoinToken>) -> HttpResponse {
    let req = Request::TokenCreate {
        ttl_secs: t.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
        uses: t.uses.unwrap_or(1),
    };
    call(s, c, req).await
}
