//! Joining: a peer without a certificate may open one `Join` stream, present a token and a CSR,
//! and leave with a certificate. Nothing else is possible on such a connection.

use crate::streams::FIRST_FRAME_TIMEOUT;
use crate::Ctx;
use river_mesh::{close, read_header, recv_msg, send_msg, Connection};
use river_pki::Subject;
use river_proto::msg::{JoinRequest, JoinResponse, NodeState, TokenPurpose};
use river_proto::name::Name;
use river_proto::token::{JoinToken, TokenRefusal, TokenState};
use river_proto::StreamKind;
use river_store::{IssuedCert, NodeRecord, StoreError, UserRecord};
use std::sync::Arc;

pub(crate) async fn serve_joiner(ctx: Arc<Ctx>, conn: Connection) {
    let remote = conn.remote_address();
    let outcome = tokio::time::timeout(FIRST_FRAME_TIMEOUT, async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let header = read_header(&mut recv).await.ok()?;
        if header.kind != StreamKind::Join {
            return None;
        }
        let req: JoinRequest = recv_msg(&mut recv).await.ok()??;
        // An address that keeps failing is told to wait, and its token is not even looked at.
        let resp = match ctx.join_failures.blocked(remote.ip(), std::time::Instant::now()) {
            Some(left) => refused(format!(
                "too many failed joins from {}; try again in {} s",
                remote.ip(),
                left.as_secs().max(1)
            )),
            None => join(&ctx, &req, &remote.to_string()).await,
        };
        send_msg(&mut send, &resp).await.ok()?;
        let _ = send.finish();
        Some(resp)
    })
    .await;
    match outcome {
        Ok(Some(JoinResponse::Issued { name, .. })) => {
            ctx.join_failures.succeeded(remote.ip());
            // Let the joiner read the answer and hang up itself.
            let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, conn.closed()).await;
            conn.close(close::JOINED, b"joined");
            tracing::info!(%remote, %name, "issued a certificate");
        }
        Ok(Some(JoinResponse::Refused { reason })) => {
            // Logged in aggregate by `join_failures`; the detail only for whoever debugs.
            ctx.join_failures.failed(remote.ip(), std::time::Instant::now());
            let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, conn.closed()).await;
            tracing::debug!(%remote, "refused a join: {reason}");
        }
        _ => {
            ctx.join_failures.failed(remote.ip(), std::time::Instant::now());
            tracing::debug!(%remote, "closed a connection without a certificate that did not join");
            conn.close(close::PROTOCOL, b"a connection without a certificate may only join");
        }
    }
}

fn refused(reason: impl ToString) -> JoinResponse {
    JoinResponse::Refused {
        reason: reason.to_string(),
    }
}

async fn join(ctx: &Ctx, req: &JoinRequest, remote: &str) -> JoinResponse {
    let token = match JoinToken::parse(&req.token) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    if token.ca_fingerprint != ctx.ca_fp {
        return refused("this join token belongs to another cluster (its CA fingerprint does not match this host's)");
    }
    let record = match ctx.store.token(&token.id).await {
        Ok(Some(r)) if token.matches_hash(&r.secret_hash) => r,
        Ok(_) => return refused(TokenRefusal::Unknown),
        Err(e) => return refused(format!("host database error: {e}")),
    };
    let state = TokenState {
        expires_at: record.expires_at,
        uses_left: record.uses_left,
        revoked: record.revoked,
    };
    if let Err(why) = state.check(ctx.clock.now_s()) {
        return refused(why);
    }
    match (record.purpose, &record.user) {
        (TokenPurpose::Node, _) => join_node(ctx, &record.id, req, remote).await,
        (TokenPurpose::User, Some((name, role))) => join_user(ctx, &record.id, req, name, Some(*role)).await,
        (TokenPurpose::User, None) => refused("this invite names no user; create a new one with `river user invite`"),
        (TokenPurpose::Reissue, Some((name, _))) => join_user(ctx, &record.id, req, name, None).await,
        (TokenPurpose::Reissue, None) => {
            refused("this token names no user; an admin makes a new one with `river user reissue`")
        }
    }
}

async fn join_node(ctx: &Ctx, token_id: &str, req: &JoinRequest, remote: &str) -> JoinResponse {
    let name = match Name::parse(&req.name) {
        Ok(n) => n,
        Err(e) => return refused(format!("{e} (choose one with `river runner --name`)")),
    };
    if let Ok(Some(_)) = ctx.store.node(name.as_str()).await {
        return refused(format!(
            "a node named {name} is already in the cluster; remove it first (`river node remove {name}`) or join with another `--name`"
        ));
    }
    let now = ctx.clock.now_s();
    let (cert_pem, info) = match ctx.issue(
        &req.csr_pem,
        &Subject::Node(name.to_string()),
        ctx.cfg.node_cert_lifetime,
    ) {
        Ok(x) => x,
        Err(e) => return refused(e),
    };
    let record = NodeRecord {
        name: name.to_string(),
        state: NodeState::Offline,
        address: Some(remote.to_owned()),
        info: Default::default(),
        usage: None,
        last_heartbeat_ms: None,
        joined_at: now,
        cert_serial: info.serial,
        cert_expires_at: info.not_after,
    };
    match ctx.store.join_node(token_id, now, &record).await {
        Ok(()) => {}
        Err(StoreError::TokenSpent) => return refused(TokenRefusal::UsedUp),
        Err(StoreError::Exists(_)) => return refused(format!("a node named {name} is already in the cluster")),
        Err(e) => return refused(format!("host database error: {e}")),
    }
    ctx.registry.load(std::slice::from_ref(&record));
    let _ = ctx
        .store
        .event(
            ctx.clock.now_ms(),
            &format!("node {name}"),
            "node.join",
            &format!("token {token_id} from {remote}"),
        )
        .await;
    JoinResponse::Issued {
        name: name.to_string(),
        cert_pem,
        ca_pem: ctx.ca.cert_pem().to_owned(),
    }
}

/// Enrols a new user with `role` (an invite), or — `role` `None`, a reissue — gives an existing
/// user a new certificate and revokes all their earlier ones.
async fn join_user(
    ctx: &Ctx,
    token_id: &str,
    req: &JoinRequest,
    name: &str,
    role: Option<river_proto::msg::Role>,
) -> JoinResponse {
    let now = ctx.clock.now_s();
    let (cert_pem, info) = match ctx.issue(
        &req.csr_pem,
        &Subject::User(name.to_owned()),
        ctx.cfg.user_cert_lifetime,
    ) {
        Ok(x) => x,
        Err(e) => return refused(e),
    };
    let cert = IssuedCert {
        serial: &info.serial,
        expires_at: info.not_after,
    };
    let (done, what) = match role {
        Some(role) => {
            let user = UserRecord {
                name: name.to_owned(),
                role,
                created_at: now,
                disabled: false,
                removed_at: None,
            };
            (
                ctx.store.enrol_user(Some(token_id), now, &user, &cert).await,
                "user.login",
            )
        }
        None => (
            ctx.store.reenrol_user(token_id, now, name, &cert).await.map(|revoked| {
                tracing::info!(user = %name, revoked, "user re-enrolled; earlier certificates revoked");
            }),
            "user.reissue",
        ),
    };
    match done {
        Ok(()) => {}
        Err(StoreError::TokenSpent) => return refused(TokenRefusal::UsedUp),
        Err(StoreError::Exists(_)) => {
            return refused(format!(
                "a user named {name} exists already; an invite never takes over an account (an admin re-enrols them with `river user reissue {name}`)"
            ))
        }
        Err(StoreError::NotFound(_)) => return refused(format!("there is no user {name} any more")),
        Err(e) => return refused(format!("host database error: {e}")),
    }
    if role.is_none() {
        // Whoever holds an earlier certificate loses what they have open with it, now.
        ctx.cut_off_user(name);
    }
    let _ = ctx
        .store
        .event(
            ctx.clock.now_ms(),
            &format!("user {name}"),
            what,
            &format!("token {token_id}"),
        )
        .await;
    JoinResponse::Issued {
        name: name.to_owned(),
        cert_pem,
        ca_pem: ctx.ca.cert_pem().to_owned(),
    }
}

/// An invitation accepted in a browser (the dashboard at the host's own address): the account is
/// made as `river login --token` makes it, with the invite's name and role, and a certificate no
/// one holds (the host makes its key and forgets it) — `river user reissue` gives its user one for
/// a CLI later. Only invitations: a node's join token or a reissue is refused here. Who was
/// enrolled, or why not.
pub(crate) async fn accept_in_browser(
    ctx: &Ctx,
    text: &str,
    remote: &str,
) -> Result<(String, river_proto::msg::Role), String> {
    let token = JoinToken::parse(text).map_err(|e| e.to_string())?;
    let record = match ctx.store.token(&token.id).await {
        Ok(Some(r)) if token.matches_hash(&r.secret_hash) => r,
        Ok(_) => return Err(TokenRefusal::Unknown.to_string()),
        Err(e) => return Err(format!("host database error: {e}")),
    };
    let (TokenPurpose::User, Some((name, role))) = (record.purpose, record.user) else {
        return Err("this is not an invitation (a node's join token, or a reissue for `river login --token`)".into());
    };
    let (_key, csr_pem) = river_pki::new_key_and_csr(&name).map_err(|e| e.to_string())?;
    let req = JoinRequest {
        token: text.to_owned(),
        name: name.clone(),
        csr_pem,
    };
    match join(ctx, &req, remote).await {
        JoinResponse::Issued { .. } => Ok((name, role)),
        JoinResponse::Refused { reason } => Err(reason),
    }
}
