//! Managing people: removing a user, changing a role, disabling and enabling. Who may do what to
//! whom is decided by [`may_manage`], one pure rule; every change that takes something away closes
//! the user's open connections, so it counts at once and not at their next login.

use crate::auth::{may_manage, Caller};
use crate::reply::{refused, HostError, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, Response, Role, Signal};
use river_store::UserRecord;

/// The account `name`, if `caller` may manage it (with `new_role`), else the refusal — which the
/// audit trail keeps, as `refused` with the request's kind (`what`).
async fn target(ctx: &Ctx, caller: &Caller, what: &str, name: &str, new_role: Option<Role>) -> HostResult<UserRecord> {
    let Caller::User { name: me, role: by } = caller else {
        return Err(refused(ErrorKind::Forbidden, "only users manage users"));
    };
    let Some(user) = ctx.store.user(name).await?.filter(|u| u.removed_at.is_none()) else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no user {name} (or they were removed, which is for good); `river user list` shows them"),
        ));
    };
    match may_manage(me, *by, &user, new_role) {
        Ok(()) => Ok(user),
        Err(why) => {
            ctx.store
                .event(
                    ctx.clock.now_ms(),
                    &caller.actor(),
                    "refused",
                    &format!("{what} {name}: {why}"),
                )
                .await?;
            Err(refused(ErrorKind::Forbidden, why))
        }
    }
}

pub(crate) async fn remove(ctx: &Ctx, caller: &Caller, name: &str, kill_tasks: bool) -> HostResult<Response> {
    target(ctx, caller, "UserRemove", name, None).await?;
    ctx.store.remove_user(name, ctx.clock.now_s()).await?;
    let closed = ctx.cut_off_user(name);
    let owner = format!("user {name}");
    let theirs: Vec<u64> = ctx
        .store
        .unfinished_tasks()
        .await?
        .iter()
        .filter(|t| t.owner == owner)
        .map(|t| t.id)
        .collect();
    let tasks = if kill_tasks {
        let mut killed = 0;
        for id in &theirs {
            // One that cannot be killed (it ended meanwhile, its node is away) is counted out,
            // not a reason to stop.
            match crate::tasks::signal(ctx, caller, *id, Signal::Kill).await {
                Ok(_) => killed += 1,
                Err(HostError::Refused { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let left = theirs.len() - killed;
        if left == 0 {
            format!("{killed} of their tasks killed")
        } else {
            format!(
                "{killed} of their tasks killed; {left} could not be (a stopped VPS is removed with `river vps rm ID`)"
            )
        }
    } else if theirs.is_empty() {
        "they had no unfinished task".to_owned()
    } else {
        format!(
            "{} of their tasks kept (operators can kill them: `river task kill ID`)",
            theirs.len()
        )
    };
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "user.rm", name)
        .await?;
    Ok(Response::Done {
        message: format!(
            "removed user {name}: every certificate of theirs revoked, {closed} open connection(s) closed, their gateway keys dropped; {tasks}"
        ),
    })
}

pub(crate) async fn set_role(ctx: &Ctx, caller: &Caller, name: &str, role: Role) -> HostResult<Response> {
    let user = target(ctx, caller, "UserSetRole", name, Some(role)).await?;
    ctx.store.set_user_role(name, role).await?;
    // Open connections carry the role they were opened with.
    ctx.cut_off_user(name);
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "user.role",
            &format!("{name}: {} → {}", user.role.as_str(), role.as_str()),
        )
        .await?;
    Ok(Response::Done {
        message: format!("{name} is now {} (was {})", role.as_str(), user.role.as_str()),
    })
}

pub(crate) async fn enable(ctx: &Ctx, caller: &Caller, name: &str, enabled: bool) -> HostResult<Response> {
    let what = if enabled { "UserEnable" } else { "UserDisable" };
    target(ctx, caller, what, name, None).await?;
    ctx.store.set_user_disabled(name, !enabled).await?;
    let message = if enabled {
        format!("{name} may connect again")
    } else {
        let closed = ctx.cut_off_user(name);
        format!("{name} is disabled: {closed} open connection(s) closed; nothing of theirs is removed (`river user enable {name}` undoes it)")
    };
    let action = if enabled { "user.enable" } else { "user.disable" };
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), action, name)
        .await?;
    Ok(Response::Done { message })
}
