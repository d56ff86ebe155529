//! The API's routes that change environments (the dashboard's environments page uses them): make
//! one from an image, remove one. Each is the CLI's request, decided where the CLI's is.

use super::{call, ApiCaller, Body};
use crate::Ctx;
use axum::extract::{Path, State};
use axum::response::Response as HttpResponse;
use axum::routing::{delete, post};
use axum::{Extension, Router};
use river_proto::msg::Request;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Ctx>> {
    Router::new().route("/api/envs", post(create)).route(
        "/api/envs/{name}",
        delete(|s, c, Path(name): Path<String>| call(s, c, Request::EnvRm { name })),
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
