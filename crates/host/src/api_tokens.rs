//! API tokens: how a script or CI job calls the HTTPS API without a certificate
//! (`Authorization: Bearer rvk1.ID.SECRET`). A token acts as the user who made it, at most at the
//! role it was made with and never above the user's role at the time of use; a removed or
//! disabled user's tokens stop working with them. The host keeps only a hash of the secret.

use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::secrets::secret_hash as hash;
use crate::Ctx;
use river_proto::msg::{ApiTokenCreated, ApiTokenView, ErrorKind, Response, Role, API_TOKEN_PREFIX};
use river_proto::name::Name;
use river_store::{ApiTokenRecord, StoreError};

/// The longest an API token may be valid.
pub(crate) const MAX_TTL_SECS: u64 = 366 * 86_400;

/// `rvk1.ID.SECRET` split into its id and secret.
fn parse(text: &str) -> Option<(&str, &str)> {
    let mut parts = text.trim().split('.');
    let (Some(API_TOKEN_PREFIX), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

/// Who a bearer token acts as, or why it is refused. The user is read at every use, so a role
/// lowered, a user disabled or removed counts from their next request.
pub(crate) async fn caller(ctx: &Ctx, text: &str) -> anyhow::Result<Result<Caller, &'static str>> {
    const UNKNOWN: &str = "this API token is unknown, revoked or expired (`river user token list` shows yours)";
    let Some((id, secret)) = parse(text) else {
        return Ok(Err(
            "not a river API token (it reads rvk1.…); `river user token create` makes one",
        ));
    };
    let Some(t) = ctx.store.api_token(id).await? else {
        return Ok(Err(UNKNOWN));
    };
    if t.secret_hash != hash(secret) || t.revoked_at.is_some() || t.expires_at <= ctx.clock.now_s() {
        return Ok(Err(UNKNOWN));
    }
    let Some(user) = ctx.store.user(&t.user).await?.filter(|u| u.removed_at.is_none()) else {
        return Ok(Err(UNKNOWN));
    };
    if user.disabled {
        return Ok(Err("this API token's user is disabled"));
    }
    // A use is noted at most every 10 s: a dashboard polling with a token writes little.
    let now = ctx.clock.now_ms();
    if t.last_used_ms.is_none_or(|at| now - at >= 10_000) {
        ctx.store.touch_api_token(id, now).await?;
    }
    Ok(Ok(Caller::User {
        name: t.user,
        role: t.role.min(user.role),
    }))
}

/// The user whose tokens (`what`: "API tokens", "dashboard sessions") a request is about: the
/// caller's own, or `other`'s if the caller may manage them.
pub(crate) async fn whose(ctx: &Ctx, caller: &Caller, other: Option<String>, what: &str) -> HostResult<String> {
    let Caller::User { name: me, role } = caller else {
        return Err(refused(ErrorKind::Forbidden, format!("only users have {what}")));
    };
    let Some(other) = other.filter(|o| o != me) else {
        return Ok(me.clone());
    };
    if *role < Role::Operator {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("only operators and admins see or revoke someone else's {what}"),
        ));
    }
    let Some(target) = ctx.store.user(&other).await? else {
        return Err(refused(ErrorKind::NotFound, format!("no user {other}")));
    };
    match crate::auth::may_manage(me, *role, &target, None) {
        Ok(()) => Ok(other),
        Err(why) => Err(refused(ErrorKind::Forbidden, why)),
    }
}

pub(crate) async fn create(
    ctx: &Ctx,
    caller: &Caller,
    name: &str,
    ttl_secs: u64,
    role: Option<Role>,
) -> HostResult<Response> {
    let Caller::User { name: user, role: mine } = caller else {
        return Err(refused(ErrorKind::Forbidden, "only users have API tokens"));
    };
    if let Err(e) = Name::parse(name) {
        return Err(refused(ErrorKind::Invalid, format!("token name: {e}")));
    }
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(refused(
            ErrorKind::Invalid,
            "an API token's lifetime must be between 1s and 366 days",
        ));
    }
    let role = role.unwrap_or(*mine);
    if role > *mine {
        return Err(refused(
            ErrorKind::Forbidden,
            format!(
                "a token may do at most what you may: you are {}, not {}",
                mine.as_str(),
                role.as_str()
            ),
        ));
    }
    let (id, secret) = crate::secrets::new_credential();
    let now = ctx.clock.now_s();
    let record = ApiTokenRecord {
        id: id.clone(),
        user: user.clone(),
        name: name.to_owned(),
        role,
        secret_hash: hash(&secret),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
        last_used_ms: None,
        revoked_at: None,
    };
    match ctx.store.insert_api_token(&record, now).await {
        Ok(()) => {}
        Err(StoreError::Exists(_)) => {
            return Err(refused(
                ErrorKind::Conflict,
                format!("you have a token named {name} already; revoke it first (`river user token revoke {name}`) or choose another name"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "api-token.create",
            &format!("{name} ({}, id {id})", role.as_str()),
        )
        .await?;
    Ok(Response::ApiTokenCreated(ApiTokenCreated {
        name: name.to_owned(),
        user: user.clone(),
        role,
        token: format!("{API_TOKEN_PREFIX}.{id}.{secret}"),
        expires_at_ms: crate::clock::ms(record.expires_at),
    }))
}

pub(crate) async fn list(ctx: &Ctx, caller: &Caller, user: Option<String>) -> HostResult<Response> {
    let user = whose(ctx, caller, user, "API tokens").await?;
    let tokens = ctx.store.api_tokens(Some(&user)).await?;
    Ok(Response::ApiTokens(
        tokens
            .into_iter()
            .map(|t| ApiTokenView {
                id: t.id,
                name: t.name,
                user: t.user,
                role: t.role,
                created_at_ms: crate::clock::ms(t.created_at),
                expires_at_ms: crate::clock::ms(t.expires_at),
                last_used_ms: t.last_used_ms,
                revoked_at_ms: t.revoked_at.map(crate::clock::ms),
            })
            .collect(),
    ))
}

pub(crate) async fn revoke(ctx: &Ctx, caller: &Caller, name: &str, user: Option<String>) -> HostResult<Response> {
    let user = whose(ctx, caller, user, "API tokens").await?;
    if !ctx.store.revoke_api_token(&user, name, ctx.clock.now_s()).await? {
        return Err(refused(
            ErrorKind::NotFound,
            format!("{user} has no live API token named {name}; `river user token list` shows them"),
        ));
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "api-token.revoke",
            &format!("{user}'s {name}"),
        )
        .await?;
    Ok(Response::Done {
        message: format!("revoked {user}'s API token {name}: it no longer works"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_looked_up() {
        assert_eq!(parse("rvk1.0123456789ab.c2VjcmV0"), Some(("0123456789ab", "c2VjcmV0")));
        assert_eq!(parse(" rvk1.0123456789ab.x\n"), Some(("0123456789ab", "x")));
        for bad in [
            "rvt1.0123456789ab.x",
            "rvk1.0123.x",
            "rvk1.0123456789ab.",
            "rvk1.0123456789ab.x.y",
            "",
            "rvk1.zz3456789abc.x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_ne!(hash("a"), hash("b"));
    }
}
