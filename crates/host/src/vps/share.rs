//! A VPS shared with colleagues: its owner (or an operator) lets named users reach it — `river
//! ssh`, `connect`, `forward` and the SSH gateway — without making them operators; stopping,
//! removing, snapshotting and its keys stay the owner's. A colleague logs in over SSH with their
//! own keys (`river user key add`), added to the VPS's for their connection only.

use crate::auth::may_touch;
use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, Response};
use river_store::TaskRecord;

/// Whether `caller` may reach `t` because its owner shared it with them.
pub(crate) async fn shared_with(ctx: &Ctx, caller: &Caller, t: &TaskRecord) -> bool {
    let Caller::User { name, .. } = caller else {
        return false;
    };
    t.spec.vps.is_some()
        && ctx
            .store
            .vps_shares(t.id)
            .await
            .is_ok_and(|users| users.iter().any(|u| u == name))
}

/// The keys `caller` logs in with over SSH to `t`, beyond the VPS's own: theirs, if it is shared
/// with them (its owner and operators use the VPS's keys).
pub(crate) async fn extra_keys(ctx: &Ctx, caller: &Caller, t: &TaskRecord) -> Vec<String> {
    let Caller::User { name, .. } = caller else {
        return Vec::new();
    };
    if may_touch(caller, t) || !shared_with(ctx, caller, t).await {
        return Vec::new();
    }
    ctx.store
        .user_keys(name)
        .await
        .map(|keys| keys.into_iter().map(|k| k.key).collect())
        .unwrap_or_default()
}

/// `Request::VpsShares`: who VPS `id` is shared with, for its owner or an operator.
pub(crate) async fn shares(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<Response> {
    let t = shareable(ctx, caller, id).await?;
    let mut with = ctx.store.vps_shares(t.id).await?;
    with.sort();
    Ok(Response::SharedWith(with))
}

/// VPS `id`, if `caller` may share it.
async fn shareable(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<TaskRecord> {
    let Some(t) = ctx.store.task(id).await? else {
        return Err(refused(ErrorKind::NotFound, format!("no VPS {id}")));
    };
    if t.spec.vps.is_none() {
        return Err(refused(
            ErrorKind::Invalid,
            format!("task {id} is not a VPS; only VPSs are shared (others reach a task through its owner)"),
        ));
    }
    if !may_touch(caller, &t) {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("VPS {id} belongs to {}; only they or an operator share it", t.owner),
        ));
    }
    Ok(t)
}

pub(crate) async fn share(ctx: &Ctx, caller: &Caller, id: u64, user: &str, on: bool) -> HostResult<Response> {
    let t = shareable(ctx, caller, id).await?;
    if on {
        match ctx.store.user(user).await? {
            Some(u) if u.removed_at.is_none() => {}
            _ => return Err(refused(ErrorKind::NotFound, format!("no user {user}"))),
        }
        if t.owner == format!("user {user}") {
            return Err(refused(ErrorKind::Invalid, format!("VPS {id} is {user}'s own")));
        }
        ctx.store.share_vps(id, user, ctx.clock.now_ms()).await?;
    } else if ctx.store.unshare_vps(id, user).await? {
        // What they have open may reach it; the host cannot tell which, so all of it closes.
        ctx.cut_off_user(user);
    }
    let action = if on { "vps.share" } else { "vps.unshare" };
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), action, &format!("{id} {user}"))
        .await?;
    let with = ctx.store.vps_shares(id).await?;
    Ok(Response::Done {
        message: if with.is_empty() {
            format!("VPS {id} is shared with no one")
        } else {
            format!("VPS {id} is shared with {}", with.join(", "))
        },
    })
}
