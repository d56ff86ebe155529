//! The API's routes that change environments and overlay addresses (the dashboard's environments
//! and network pages use them): make an environment from an image, remove one; reserve an
//! address, release one. Each is the CLI's request, decided where the CLI's is.

use super::{call, ApiCaller, Body};
use crate::Ctx;
use axum::extract::{Path, State};
use axum::response::Response as HttpResponse;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use river_proto::msg::Request;
use std::sync::Arc;

#[derive(serde::Deserialize)]
struct NewReservation {
    node: Option<String>,
    ip: Option<String>,
    ttl_secs: Option<u64>,
}

/// How long a reservation made without saying lasts: 10 minutes, as with `river ip reserve`.
const RESERVATION_TTL_SECS: u64 = 600;

/// `river ip reserve`: an overlay address held for a task to come, with the token it claims it by.
async fn reserve_ip(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Body(r): Body<NewReservation>) -> HttpResponse {
    let req = Request::IpReserve {
        node: r.node,
        ip: r.ip,
        ttl_secs: r.ttl_secs.unwrap_or(RESERVATION_TTL_SECS),
    };
    call(s, c, req).await
}

pub(super) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/api/envs", post(create))
        .route(
            "/api/envs/{name}",
            delete(|s, c, Path(name): Path<String>| call(s, c, Request::EnvRm { name })),
        )
        .route("/api/ips", get(|s, c| call(s, c, Request::IpList)).post(reserve_ip))
        .route(
            "/api/ips/{ip}",
            delete(|s, c, Path(ip): Path<String>| call(s, c, Request::IpRelease { ip })),
        )
}

#[derive(serde::Deserialize)]
struct NewEnv {
    name: String,
    from: String,
    node: Option<String>,
}

/// `river env create NAME --from IMAGE [--node NODE]`: answers once the image is saved and its
/// archive kept by the host.
async fn create(s: State<Arc<Ctx>>, c: Extension<ApiCaller>, Body(e): Body<NewEnv>) -> HttpResponse {
    let req = Request::EnvCreate {
        name: e.name,
        from: e.from,
        node: e.node,
    };
    call(s, c, req).await
}
