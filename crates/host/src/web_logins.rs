//! Logging in to the dashboard at the host's own address (`api/public.rs` serves it): a one-time link (`river ui --link`,
//! asked for by a logged-in user over the mesh or the API) starts a browser session. The session
//! acts as that user at most at the role they had when they asked for the link, and never above
//! their role at the time of use; it ends when it expires, is revoked (`river ui revoke`, the
//! account page, logging out), or its user is disabled, removed or reissued. The host keeps only
//! hashes of the link's key and the session's secret.

use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::secrets::{new_credential, new_secret, secret_hash as hash};
use crate::Ctx;
use river_proto::msg::{ErrorKind, Response, WebSessionView};
use river_store::WebSessionRecord;

/// The session's cookie: `ID.SECRET`, `HttpOnly`, `Secure`, `SameSite=Strict`. The `__Host-`
/// prefix makes the browser refuse it unless it is set by this origin itself, over HTTPS, for
/// the whole site — no other name in the lab's domain can plant or widen it.
pub(crate) const SESSION_COOKIE: &str = "__Host-river_session";
/// The page's anti-forgery token, `ID.TOKEN` (readable by the page's script, which sends it in
/// `X-River-CSRF` with every change; another site's page can neither read nor guess it).
pub(crate) const CSRF_COOKIE: &str = "__Host-river_csrf";

/// How long a login link may wait to be used.
pub(crate) const LINK_TTL_MS: i64 = 10 * 60_000;

const ENDED: &str = "your dashboard session has ended (it expired, was revoked, or you logged out): `river ui --link` prints a new login link";

/// The anti-forgery token of session `id` with `secret`: derived from the secret, so the host
/// keeps nothing more, and not the secret (the page's script can read it).
fn csrf_of(id: &str, secret: &str) -> String {
    format!("{id}.{}", &hash(&format!("river-csrf:{secret}"))[..32])
}

/// A session that checked out: whose it is and the role it acts at (its own cap and the user's
/// role now, the lower), and the token its page must send with a change.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) role: river_proto::msg::Role,
    pub(crate) csrf: String,
    pub(crate) expires_at_ms: i64,
}

/// A started session: the cookies' values and how long they last.
pub(crate) struct Started {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
    pub(crate) max_age_s: i64,
}

/// `Request::WebLink`: a link that logs one browser in as the caller.
pub(crate) async fn link(ctx: &Ctx, caller: &Caller) -> HostResult<Response> {
    let Some(base) = &ctx.web_url else {
        return Err(refused(
            ErrorKind::Invalid,
            "this host serves no dashboard at an address of its own (no `listen` under [web] in its config); `river ui` serves it on your machine",
        ));
    };
    let Caller::User { name, role } = caller else {
        return Err(refused(ErrorKind::Forbidden, "only users log in to the dashboard"));
    };
    let key = new_secret();
    let now = ctx.clock.now_ms();
    let expires_at_ms = now + LINK_TTL_MS;
    ctx.store
        .insert_web_link(&hash(&key), name, *role, now, expires_at_ms)
        .await?;
    Ok(Response::WebLink {
        url: format!("{base}/login?key={key}"),
        expires_at_ms,
    })
}

/// Spends link `key` and starts a session for whoever it was made for; why not, in words.
pub(crate) async fn start(
    ctx: &Ctx,
    key: &str,
    address: &str,
    agent: &str,
) -> anyhow::Result<Result<Started, &'static str>> {
    const SPENT: &str = "this login link was used already, has expired (a link lasts 10 minutes), or is not this host's: `river ui --link` prints a new one";
    let now = ctx.clock.now_ms();
    let Some((user, role)) = ctx.store.take_web_link(&hash(key), now).await? else {
        return Ok(Err(SPENT));
    };
    let Some(account) = ctx.store.user(&user).await?.filter(|u| u.removed_at.is_none()) else {
        return Ok(Err(SPENT));
    };
    if account.disabled {
        return Ok(Err("this account is disabled"));
    }
    Ok(Ok(begin(ctx, user, role, address, agent).await?))
}

/// Starts a session of `user`, at most at `role` (a link spent, an invitation accepted).
pub(crate) async fn begin(
    ctx: &Ctx,
    user: String,
    role: river_proto::msg::Role,
    address: &str,
    agent: &str,
) -> anyhow::Result<Started> {
    let now = ctx.clock.now_ms();
    let (id, secret) = new_credential();
    let lifetime_ms = i64::try_from(ctx.cfg.web.session_lifetime.as_millis()).unwrap_or(i64::MAX);
    let agent: String = agent.chars().filter(|c| !c.is_control()).take(200).collect();
    let record = WebSessionRecord {
        id: id.clone(),
        user,
        role,
        secret_hash: hash(&secret),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(lifetime_ms),
        last_seen_ms: Some(now),
        address: address.to_owned(),
        agent,
        revoked_at_ms: None,
    };
    ctx.store.insert_web_session(&record).await?;
    tracing::info!(user = %record.user, session = %id, %address, "a browser logged in to the dashboard");
    Ok(Started {
        csrf: csrf_of(&id, &secret),
        cookie: format!("{id}.{secret}"),
        max_age_s: lifetime_ms / 1000,
    })
}

/// The session a cookie names, if it is live and its user may still use it; why not, in words.
/// Read at every request: a revocation, a lowered role or a disabled account counts at once.
pub(crate) async fn check(ctx: &Ctx, cookie: &str) -> anyhow::Result<Result<Session, &'static str>> {
    let Some((id, secret)) = cookie.split_once('.') else {
        return Ok(Err(ENDED));
    };
    let now = ctx.clock.now_ms();
    let Some(s) = ctx.store.web_session(id).await? else {
        return Ok(Err(ENDED));
    };
    if s.secret_hash != hash(secret) || s.revoked_at_ms.is_some() || s.expires_at_ms <= now {
        return Ok(Err(ENDED));
    }
    let Some(user) = ctx.store.user(&s.user).await?.filter(|u| u.removed_at.is_none()) else {
        return Ok(Err(ENDED));
    };
    if user.disabled {
        return Ok(Err("your account is disabled"));
    }
    // A use is noted at most once a minute, decided here: every page request comes this way, and
    // an UPDATE that changes nothing still takes the database's write lock.
    if s.last_seen_ms.is_none_or(|at| now - at >= 60_000) {
        ctx.store.touch_web_session(id, now).await?;
    }
    Ok(Ok(Session {
        csrf: csrf_of(id, secret),
        id: s.id,
        user: s.user,
        role: s.role.min(user.role),
        expires_at_ms: s.expires_at_ms,
    }))
}

/// `Request::WebSessions`.
pub(crate) async fn list(ctx: &Ctx, caller: &Caller, user: Option<String>) -> HostResult<Response> {
    let user = crate::api_tokens::whose(ctx, caller, user, "dashboard sessions").await?;
    let sessions = ctx.store.web_sessions(Some(&user), ctx.clock.now_ms()).await?;
    Ok(Response::WebSessions(
        sessions
            .into_iter()
            .map(|s| WebSessionView {
                id: s.id,
                user: s.user,
                created_at_ms: s.created_at_ms,
                expires_at_ms: s.expires_at_ms,
                last_seen_ms: s.last_seen_ms,
                address: s.address,
                agent: s.agent,
            })
            .collect(),
    ))
}

/// `Request::WebSessionRevoke`: ends the session at once, with whatever it has open (an event
/// stream, a terminal).
pub(crate) async fn revoke(
    ctx: &Ctx,
    caller: &Caller,
    id: Option<String>,
    user: Option<String>,
) -> HostResult<Response> {
    let user = crate::api_tokens::whose(ctx, caller, user, "dashboard sessions").await?;
    let ended = ctx
        .store
        .revoke_web_sessions(&user, id.as_deref(), ctx.clock.now_ms())
        .await?;
    if let (Some(id), true) = (&id, ended.is_empty()) {
        return Err(refused(
            ErrorKind::NotFound,
            format!("{user} has no live dashboard session {id}: `river ui sessions` lists them"),
        ));
    }
    ctx.sessions.end_web(&user, &ended);
    let message = match ended.len() {
        1 => format!("ended dashboard session {} of {user}", ended[0]),
        n => format!("ended {n} dashboard sessions of {user}"),
    };
    Ok(Response::Done { message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_proto::msg::Role;

    #[tokio::test]
    async fn a_host_without_its_own_address_says_where_the_dashboard_is() {
        let h = crate::service_tests::host().await;
        let admin = Caller::User {
            name: "admin".into(),
            role: Role::Admin,
        };
        let e = link(&h.ctx, &admin).await.unwrap_err();
        let (kind, message) = e.kind_and_message();
        assert_eq!(kind, ErrorKind::Invalid);
        assert!(message.contains("[web]") && message.contains("river ui"), "{message}");
    }

    #[test]
    fn the_page_token_is_not_the_secret_and_differs_per_session() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let t = csrf_of("id1", &a);
        assert!(t.starts_with("id1.") && !t.contains(&a));
        assert_ne!(t, csrf_of("id1", &b));
        assert_eq!(t, csrf_of("id1", &a));
    }
}
