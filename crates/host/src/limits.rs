//! Per-user limits: how many tasks wait, how many cores and GPUs a user's tasks hold at once, how
//! many VPSs they keep. The cluster's defaults come from the host config (`max_queued_per_user`,
//! `[limits]`); `river user limits NAME …` overrides them for one user. A submission that can
//! never fit is refused with the reason; one that does not fit *now* waits in the queue while the
//! scheduler lets others' tasks go ([`river_task::fair::within_limits`]).

use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, LimitValues, Response, Role, TaskSpec, UserLimitsView};
use river_task::fair::Hold;
use std::collections::HashMap;

/// Users' overrides as stored, read at start and kept up to date by [`set`]: the scheduler
/// consults them in every pass.
#[derive(Default)]
pub(crate) struct Overrides(std::sync::Mutex<HashMap<String, LimitValues>>);

impl Overrides {
    pub(crate) async fn load(store: &dyn river_store::Repositories) -> anyhow::Result<Self> {
        Ok(Self(std::sync::Mutex::new(
            store.user_limits().await?.into_iter().collect(),
        )))
    }

    fn get(&self, user: &str) -> LimitValues {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
            .unwrap_or_default()
    }
}

/// `user`'s limits as they apply: their overrides over the cluster's defaults.
pub(crate) fn effective(ctx: &Ctx, user: &str) -> LimitValues {
    let o = ctx.limits.get(user);
    let d = &ctx.cfg.limits;
    LimitValues {
        queued: Some(o.queued.unwrap_or(ctx.cfg.max_queued_per_user)),
        running_cores: Some(o.running_cores.unwrap_or(d.running_cores)),
        running_gpus: Some(o.running_gpus.unwrap_or(d.running_gpus)),
        vps: Some(o.vps.unwrap_or(d.vps)),
        archive_mib: Some(o.archive_mib.unwrap_or(d.archive_mib)),
    }
}

/// How many more bytes of archives the host may keep for `owner` (`user NAME`): `None` without
/// a limit; a refusal, for them to read, when they are at it.
pub(crate) async fn archive_budget(ctx: &Ctx, owner: &str) -> anyhow::Result<Result<Option<u64>, String>> {
    let Some(user) = owner.strip_prefix("user ") else {
        return Ok(Ok(None));
    };
    let mib = effective(ctx, user).archive_mib.unwrap_or(0);
    if mib == 0 {
        return Ok(Ok(None));
    }
    let limit = u64::from(mib) << 20;
    let used = ctx.store.archive_bytes_of(owner).await?;
    if used >= limit {
        return Ok(Err(archive_refusal(user, used, mib)));
    }
    Ok(Ok(Some(limit - used)))
}

/// Why `user`, keeping `used` bytes of archives, may keep no more.
pub(crate) fn archive_refusal(user: &str, used: u64, mib: u32) -> String {
    format!(
        "{user} keeps {} MiB of archives (environment versions and VPS snapshots) and may keep at most {mib} MiB; remove some first (`river vps snapshot rm ID SEQ`, `river env rm NAME`) or ask an operator (`river user limits`)",
        used >> 20
    )
}

/// What the tasks of `owner` (`user NAME`) may hold at once.
pub(crate) fn hold_limit(ctx: &Ctx, owner: &str) -> Hold {
    let Some(user) = owner.strip_prefix("user ") else {
        return Hold::default();
    };
    let l = effective(ctx, user);
    Hold {
        cores: l.running_cores.unwrap_or(0),
        gpus: l.running_gpus.unwrap_or(0),
    }
}

/// Refuses a submission of `adding` tasks like `spec` by `caller` that their limits do not allow
/// ever (more cores or GPUs than they may hold, one VPS too many) or now (a full queue).
pub(crate) async fn check_submit(ctx: &Ctx, caller: &Caller, spec: &TaskSpec, adding: u64) -> HostResult<()> {
    let Caller::User { name, .. } = caller else {
        return Ok(());
    };
    let l = effective(ctx, name);
    let how = format!("(`river user limits {name}` shows yours; an operator can change them)");
    let (cores, gpus) = (l.running_cores.unwrap_or(0), l.running_gpus.unwrap_or(0));
    let members = u32::try_from(adding).unwrap_or(u32::MAX);
    // A group's members run at once.
    let together = if spec.nodes.is_some() || spec.group { members } else { 1 };
    let ask = Hold {
        cores: spec.cores.saturating_mul(together),
        gpus: spec.gpus.saturating_mul(together),
    };
    if !ask.within(Hold { cores, gpus: 0 }) {
        return Err(refused(
            ErrorKind::Invalid,
            format!(
                "this asks for {} cores at once and you may hold at most {cores} {how}",
                ask.cores
            ),
        ));
    }
    if !ask.within(Hold { cores: 0, gpus }) {
        return Err(refused(
            ErrorKind::Invalid,
            format!(
                "this asks for {} GPUs at once and you may hold at most {gpus} {how}",
                ask.gpus
            ),
        ));
    }
    let queued = u64::from(l.queued.unwrap_or(0));
    if queued > 0 {
        let waiting = ctx.store.queued_of(&caller.actor()).await?;
        if waiting + adding > queued {
            return Err(refused(
                ErrorKind::Conflict,
                format!(
                    "you have {waiting} task(s) waiting and may have at most {queued} {how}; wait for some to start, or kill some (`river task list -s queued`)"
                ),
            ));
        }
    }
    let vps = l.vps.unwrap_or(0);
    if spec.vps.is_some() && vps > 0 {
        let owner = caller.actor();
        let have = ctx
            .store
            .unfinished_tasks()
            .await?
            .iter()
            .filter(|t| t.owner == owner && t.spec.vps.is_some())
            .count();
        if have >= vps as usize {
            return Err(refused(
                ErrorKind::Conflict,
                format!(
                    "you have {have} VPS(s) and may have at most {vps} {how}; remove one first (`river vps rm ID`)"
                ),
            ));
        }
    }
    Ok(())
}

/// `river user limits [NAME] [--… N] [--reset]`.
pub(crate) async fn handle(
    ctx: &Ctx,
    caller: &Caller,
    name: Option<String>,
    set: LimitValues,
    reset: bool,
) -> HostResult<Response> {
    let Caller::User { name: me, role } = caller else {
        return Err(refused(ErrorKind::Forbidden, "only users have limits"));
    };
    let user = name.unwrap_or_else(|| me.clone());
    let changing = reset || set != LimitValues::default();
    let Some(target) = ctx.store.user(&user).await?.filter(|u| u.removed_at.is_none()) else {
        return Err(refused(ErrorKind::NotFound, format!("no user {user}")));
    };
    if changing || user != *me {
        // Reading someone else's, or changing anyone's (one's own included), is for operators,
        // over those they manage.
        let allowed = if *role < Role::Operator {
            Err("only operators and admins see or set someone's limits".to_owned())
        } else {
            crate::auth::may_manage(me, *role, &target, None)
        };
        if let Err(why) = allowed {
            return Err(refused(ErrorKind::Forbidden, why));
        }
    }
    if changing {
        let mut now = if reset {
            LimitValues::default()
        } else {
            ctx.limits.get(&user)
        };
        now.queued = set.queued.or(now.queued);
        now.running_cores = set.running_cores.or(now.running_cores);
        now.running_gpus = set.running_gpus.or(now.running_gpus);
        now.vps = set.vps.or(now.vps);
        now.archive_mib = set.archive_mib.or(now.archive_mib);
        ctx.store.set_user_limits(&user, &now).await?;
        ctx.limits
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.clone(), now.clone());
        ctx.store
            .event(
                ctx.clock.now_ms(),
                &caller.actor(),
                "user.limits",
                &format!("{user}: {now:?}"),
            )
            .await?;
        // Raised limits may let waiting tasks start.
        ctx.kick.notify_one();
    }
    Ok(Response::UserLimits(UserLimitsView {
        effective: effective(ctx, &user),
        overrides: ctx.limits.get(&user),
        user,
    }))
}
