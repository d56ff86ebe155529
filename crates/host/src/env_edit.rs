//! Editing an environment: `river env shell` opens (or rejoins) the caller's editing task on a
//! node, `river env commit` makes its container the environment's next version and ends it.

use crate::auth::{env_not_theirs, Caller};
use crate::envs::*;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{EnvVersion, ErrorKind, ExportSource, Response, Signal, TaskSpec};
use river_task::state::TaskState;

/// The caller's unfinished editing task for `name`, if any.
async fn session(ctx: &Ctx, caller: &Caller, name: &str) -> anyhow::Result<Option<river_store::TaskRecord>> {
    let wanted = session_name(name);
    Ok(ctx
        .store
        .unfinished_tasks()
        .await?
        .into_iter()
        .rev()
        .find(|t| t.name.as_deref() == Some(wanted.as_str()) && t.owner == caller.actor()))
}

pub(crate) async fn shell(ctx: &Ctx, caller: &Caller, name: &str, node: Option<String>) -> HostResult<Response> {
    let Some(env) = ctx.store.env(name).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no environment {name}; `river env create {name} --from IMAGE` makes it"),
        ));
    };
    if let Some(refusal) = env_not_theirs(caller, &env, env.name == DEFAULT_ENV) {
        return Err(refusal);
    }
    if let Some(t) = session(ctx, caller, name).await? {
        return Ok(Response::EnvSession {
            task: t.id,
            started: false,
        });
    }
    // A container that just stays up; the shell is a terminal into it.
    let mut spec = TaskSpec::new(
        "",
        vec!["sh".into(), "-c".into(), "while :; do sleep 3600; done".into()],
    );
    spec.environment = Some(name.to_owned());
    spec.name = Some(session_name(name));
    spec.targets = node.into_iter().collect();
    match crate::submit::submit(ctx, caller, spec).await? {
        Response::TaskSubmitted { ids, .. } => Ok(Response::EnvSession {
            task: ids[0],
            started: true,
        }),
        other => Ok(other),
    }
}

pub(crate) async fn commit(ctx: &Ctx, caller: &Caller, name: &str, message: Option<String>) -> HostResult<Response> {
    let Some(env) = ctx.store.env(name).await? else {
        return Err(refused(ErrorKind::NotFound, format!("no environment {name}")));
    };
    if let Some(refusal) = env_not_theirs(caller, &env, env.name == DEFAULT_ENV) {
        return Err(refusal);
    }
    let Some(t) = session(ctx, caller, name).await? else {
        return Err(refused(
            ErrorKind::Conflict,
            format!("you have no editing container for {name}; start one with `river env shell {name}`"),
        ));
    };
    let state = t.state;
    let node = t.placement.as_ref().map(|p| p.node.clone());
    let (node, conn) = match (state, node) {
        (TaskState::Running | TaskState::Paused, Some(node)) => pick_node(ctx, Some(&node))?,
        _ => {
            return Err(refused(
                ErrorKind::Conflict,
                format!(
                    "the editing container of {name} (task {}) is {}, not running yet",
                    t.id, t.state
                ),
            ))
        }
    };
    let next = env.versions.last().map_or(1, |v| v.version + 1);
    let budget = match crate::limits::archive_budget(ctx, &caller.actor()).await? {
        Ok(b) => b,
        Err(why) => return Err(refused(ErrorKind::Conflict, why)),
    };
    let key = format!("env:{name}");
    let archive = match export(
        ctx,
        &conn,
        ExportSource::Task(t.id),
        &tag(name, next),
        false,
        budget,
        &key,
    )
    .await
    {
        Ok(a) => a,
        Err(why) => {
            return Err(refused(
                ErrorKind::Conflict,
                format!("node {node} could not commit task {}: {why}", t.id),
            ))
        }
    };
    let version = EnvVersion {
        version: next,
        image: tag(name, next),
        archive: Some(archive),
        created_by: caller.actor(),
        created_at_ms: ctx.clock.now_ms(),
        message,
        fetches: 0,
    };
    let stored = ctx.store.add_env_version(name, &version).await?;
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "env.commit",
            &format!("{name} v{stored} from task {}", t.id),
        )
        .await?;
    // The edit is saved: the container has done its job. Its record says so, rather than a
    // bare `killed` (the runner's report of the kill keeps this message).
    if let Some(mut edit) = ctx.store.task(t.id).await? {
        edit.message = Some(format!("saved as {name} v{stored}; its editing container was stopped"));
        ctx.save_task(&edit, edit.state).await?;
    }
    crate::tasks::signal(ctx, caller, t.id, Signal::Kill).await?;
    show(ctx, name).await
}
