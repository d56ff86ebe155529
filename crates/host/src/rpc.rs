//! Requests from the CLI (and the HTTPS API, which turns each HTTP request into the same
//! [`Request`]): authorization first, in one pure function, then the action.

use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_pki::Subject;
use river_proto::msg::{
    ClusterStatus, ErrorKind, NodeState, NodeView, Request, Response, Role, TokenCreated, TokenPurpose, TokenView,
    UserView, TASK_PAGE, TASK_PAGE_MAX,
};
use river_proto::name::Name;
use river_proto::token::JoinToken;
use river_store::{NodeRecord, TokenRecord};
use river_task::state::TaskState;

/// Who may do what. Nodes may only renew their own certificate; users by role.
pub(crate) fn authorize(caller: &Caller, req: &Request) -> Result<(), String> {
    let role = match caller {
        Caller::Node(_) => {
            return match req {
                Request::Renew { .. } | Request::WhoAmI => Ok(()),
                _ => Err("nodes may only renew their certificate".into()),
            }
        }
        Caller::User { role, .. } => *role,
    };
    let needed = match req {
        Request::WhoAmI
        | Request::Status
        | Request::NodeList
        | Request::NodeShow { .. }
        | Request::NodeUsage { .. }
        | Request::Renew { .. }
        | Request::Logout { .. }
        | Request::Progress { .. } => Role::Viewer,
        Request::UserList | Request::Audit { .. } => Role::Operator,
        // Whom they may manage is checked with the account in hand (`users::may_manage`).
        Request::UserRemove { .. } | Request::UserSetRole { .. } | Request::UserEnable { .. } => Role::Operator,
        Request::UserInvite { role: invited, .. } => {
            if *invited >= Role::Operator {
                Role::Admin
            } else {
                Role::Operator
            }
        }
        Request::NodeRemove { .. }
        | Request::NodeAdmit { .. }
        | Request::UserReissue { .. }
        | Request::TokenCreate { .. }
        | Request::TokenList
        | Request::TokenRevoke { .. } => Role::Admin,
        Request::TaskList { .. }
        | Request::TaskShow { .. }
        | Request::TaskWait { .. }
        | Request::TaskHistory { .. } => Role::Viewer,
        Request::TaskApprove { .. } | Request::TaskReject { .. } => Role::Operator,
        // One's own limits; someone else's, or setting any, checked with the account in hand.
        Request::UserLimits { .. } => Role::Viewer,
        // A user's own tokens; someone else's only if the caller may manage them (checked with
        // the account in hand). A token never does more than its user may.
        Request::ApiTokenCreate { .. } | Request::ApiTokenList { .. } | Request::ApiTokenRevoke { .. } => Role::Viewer,
        // One's own dashboard logins; someone else's sessions as for their tokens.
        Request::WebLink | Request::WebSessions { .. } | Request::WebSessionRevoke { .. } => Role::Viewer,
        // Whose task it is is checked with the task in hand.
        Request::TaskSubmit(_) | Request::TaskSignal { .. } | Request::TaskLogs { .. } => Role::User,
        Request::VpsStart { .. }
        | Request::VpsRemove { .. }
        | Request::VpsKeys { .. }
        | Request::VpsSnapshot { .. }
        | Request::VpsSnapshots { .. }
        | Request::VpsSnapshotRm { .. }
        | Request::VpsRestore { .. }
        | Request::VpsShare { .. }
        | Request::VpsShares { .. } => Role::User,
        // A user's own keys.
        Request::UserKeyAdd { .. } | Request::UserKeys | Request::UserKeyRm { .. } => Role::Viewer,
        Request::EnvList | Request::IpList | Request::Overlay => Role::Viewer,
        // Whose reservation it is is checked with it in hand.
        Request::IpReserve { .. } | Request::IpRelease { .. } => Role::User,
        // Whose environment it is is checked with it in hand.
        Request::EnvCreate { .. } | Request::EnvRm { .. } | Request::EnvShell { .. } | Request::EnvCommit { .. } => {
            Role::User
        }
    };
    if role >= needed {
        Ok(())
    } else {
        Err(format!(
            "this needs the {} role; you are {}",
            needed.as_str(),
            role.as_str()
        ))
    }
}

pub(crate) async fn handle(ctx: &Ctx, caller: &Caller, req: Request) -> Response {
    if let Err(why) = authorize(caller, &req) {
        tracing::warn!(who = %caller.actor(), request = req.kind(), "refused: {why}");
        // Kept for `river audit` too: the kind and the reason, never the request's contents.
        let _ = ctx
            .store
            .event(
                ctx.clock.now_ms(),
                &caller.actor(),
                "refused",
                &format!("{}: {why}", req.kind()),
            )
            .await;
        return refused(ErrorKind::Forbidden, why).into_response();
    }
    match act(ctx, caller, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn act(ctx: &Ctx, caller: &Caller, req: Request) -> HostResult<Response> {
    Ok(match req {
        Request::WhoAmI => match caller {
            Caller::Node(n) => Response::WhoAmI {
                identity: format!("node {n}"),
                role: None,
            },
            Caller::User { name, role } => Response::WhoAmI {
                identity: format!("user {name}"),
                role: Some(*role),
            },
        },
        Request::Status => Response::Status(status(ctx).await?),
        Request::NodeList => Response::Nodes(ctx.store.nodes().await?.into_iter().map(|n| view(ctx, n)).collect()),
        Request::NodeUsage { name } => match ctx.store.node(&name).await? {
            Some(_) => Response::Usage(ctx.usage.of(&name, ctx.clock.now_ms())),
            None => return Err(refused(
                ErrorKind::NotFound,
                format!("no node named {name}; `river node list` shows the nodes"),
            )),
        },
        Request::NodeShow { name } => match ctx.store.node(&name).await? {
            Some(n) => Response::Node(Box::new(view(ctx, n))),
            None => return Err(refused(
                ErrorKind::NotFound,
                format!("no node named {name}; `river node list` shows the nodes"),
            )),
        },
        Request::NodeRemove { name } => match ctx.store.remove_node(&name, ctx.clock.now_s()).await? {
            Some(_) => {
                ctx.registry.remove(&name);
                ctx.usage.forget(&name);
                crate::tasks::node_removed(ctx, &name).await?;
                crate::overlay::removed(ctx, &name).await?;
                ctx.store.event(ctx.clock.now_ms(), &caller.actor(), "node.remove", &name).await?;
                Response::Done {
                    message: format!("removed node {name}; its certificate is revoked and it can no longer connect"),
                }
            }
            None => return Err(refused(
                ErrorKind::NotFound,
                format!("no node named {name}; `river node list` shows the nodes"),
            )),
        },
        Request::NodeAdmit { name } => match ctx.registry.take_unknown(&name) {
            Some((serial, expires_at)) if !ctx.store.is_revoked(&serial).await? => {
                ctx.store.admit_node(&name, &serial, expires_at, ctx.clock.now_s()).await?;
                ctx.store
                    .event(ctx.clock.now_ms(), &caller.actor(), "node.admit", &format!("{name} serial {serial}"))
                    .await?;
                Response::Done {
                    message: format!("admitted node {name} with the certificate it presented (serial {serial}); it connects again within its retry interval (at most 30 s)"),
                }
            }
            Some(_) => return Err(refused(
                ErrorKind::Invalid,
                format!("node {name}'s certificate was revoked (the node was removed); join it again with a new token"),
            )),
            None => return Err(refused(
                ErrorKind::NotFound,
                format!("no unknown node named {name} has tried to connect since the host started; a node the host knows is in `river node list`"),
            )),
        },
        Request::TokenCreate { ttl_secs, uses } => {
            if uses == 0 {
                return Err(refused(ErrorKind::Invalid, "a token needs at least one use"));
            }
            check_ttl(ctx, ttl_secs)?;
            Response::TokenCreated(create_node_token(ctx, &caller.actor(), ttl_secs, uses).await?)
        }
        Request::TokenList => Response::Tokens(
            ctx.store
                .tokens()
                .await?
                .into_iter()
                .map(|t| TokenView {
                    id: t.id,
                    purpose: t.purpose,
                    user: t.user.map(|u| u.0),
                    created_at_ms: crate::clock::ms(t.created_at),
                    expires_at_ms: crate::clock::ms(t.expires_at),
                    uses_left: t.uses_left,
                    revoked: t.revoked,
                })
                .collect(),
        ),
        Request::TokenRevoke { id } => {
            if ctx.store.revoke_token(&id).await? {
                ctx.store.event(ctx.clock.now_ms(), &caller.actor(), "token.revoke", &id).await?;
                Response::Done {
                    message: format!("revoked token {id}"),
                }
            } else {
                return Err(refused(
                    ErrorKind::NotFound,
                    format!("no token with id {id}; `river token list` shows them"),
                ))
            }
        }
        Request::UserInvite { name, role, ttl_secs } => {
            let name = match Name::parse(&name) {
                Ok(n) => n,
                Err(e) => return Err(refused(ErrorKind::Invalid, e.to_string())),
            };
            check_ttl(ctx, ttl_secs)?;
            // An invite makes a new account and never touches an existing one: its holder would
            // become that user, whatever role the invite names.
            if let Some(u) = ctx.store.user(name.as_str()).await? {
                if u.removed_at.is_some() {
                    return Err(refused(
                        ErrorKind::Conflict,
                        format!("the name {name} belonged to a user who was removed; a name is never given to someone else (tasks, environments and files of theirs may remain), so choose another"),
                    ));
                }
                return Err(refused(
                    ErrorKind::Conflict,
                    format!(
                        "user {name} exists already ({}); an invite only makes new users — to let {name} log in again (a new laptop, a lost key) an admin runs `river user reissue {name}`",
                        u.role.as_str()
                    ),
                ));
            }
            let created = create_token(
                ctx,
                &caller.actor(),
                ttl_secs,
                1,
                TokenPurpose::User,
                Some((name.to_string(), role)),
            )
            .await?;
            Response::TokenCreated(created)
        }
        Request::UserReissue { name, ttl_secs } => {
            check_ttl(ctx, ttl_secs)?;
            let Some(u) = ctx.store.user(&name).await?.filter(|u| u.removed_at.is_none()) else {
                return Err(refused(
                    ErrorKind::NotFound,
                    format!("no user {name} (removed users do not come back); `river user list` shows them, `river user invite` makes one"),
                ));
            };
            let created = create_token(
                ctx,
                &caller.actor(),
                ttl_secs,
                1,
                TokenPurpose::Reissue,
                Some((u.name, u.role)),
            )
            .await?;
            Response::TokenCreated(created)
        }
        Request::UserList => Response::Users(
            ctx.store
                .users()
                .await?
                .into_iter()
                .map(|u| UserView {
                    name: u.name,
                    role: u.role,
                    created_at_ms: crate::clock::ms(u.created_at),
                    disabled: u.disabled,
                    removed_at_ms: u.removed_at.map(crate::clock::ms),
                })
                .collect(),
        ),
        Request::UserRemove { name, kill_tasks } => crate::users::remove(ctx, caller, &name, kill_tasks).await?,
        Request::UserSetRole { name, role } => crate::users::set_role(ctx, caller, &name, role).await?,
        Request::UserEnable { name, enabled } => crate::users::enable(ctx, caller, &name, enabled).await?,
        Request::Audit { user, since_ms, limit } => Response::Events(
            ctx.store
                .events(user.as_deref(), since_ms, limit.clamp(1, river_proto::msg::AUDIT_MAX))
                .await?
                .into_iter()
                .map(|e| river_proto::msg::EventView {
                    at_ms: e.at_ms,
                    actor: e.actor,
                    action: e.action,
                    detail: e.detail,
                })
                .collect(),
        ),
        Request::Renew { csr_pem } => renew(ctx, caller, &csr_pem).await?,
        Request::Logout { serial } => {
            let Caller::User { name, .. } = caller else {
                return Err(refused(ErrorKind::Forbidden, "only users log out"));
            };
            if !ctx.store.revoke_user_cert(name, &serial, ctx.clock.now_s()).await? {
                return Err(refused(
                    ErrorKind::NotFound,
                    "that certificate is not one of yours (or was revoked already)",
                ));
            }
            ctx.store.event(ctx.clock.now_ms(), &caller.actor(), "user.logout", &serial).await?;
            Response::Done {
                message: "logged out: this certificate no longer works".into(),
            }
        }
        Request::TaskSubmit(spec) => crate::submit::submit(ctx, caller, spec).await?,
        Request::TaskList {
            state,
            node,
            before,
            limit,
            vps,
            owner,
        } => {
            if let Some(st) = &state {
                if let Err(e) = st.parse::<river_task::state::TaskState>() {
                    return Err(refused(ErrorKind::Invalid, e));
                }
            }
            let q = river_store::TaskQuery {
                state,
                node,
                vps,
                owner,
            };
            let limit = limit.unwrap_or(TASK_PAGE).clamp(1, TASK_PAGE_MAX);
            let (page, total) = ctx.store.task_page(&q, before, limit).await?;
            Response::Tasks {
                tasks: crate::tasks::fit_page(page.into_iter().map(|t| crate::tasks::view(ctx, caller, t))),
                total,
            }
        }
        Request::TaskShow { id } => crate::waiting::show(ctx, caller, id).await?,
        Request::TaskHistory { id } => crate::waiting::history(ctx, id).await?,
        Request::TaskWait { id, past, timeout_ms } => {
            crate::waiting::wait(ctx, caller, id, &past, std::time::Duration::from_millis(timeout_ms)).await?
        }
        Request::TaskSignal { id, signal } => crate::tasks::signal(ctx, caller, id, signal).await?,
        Request::TaskLogs { id, stderr } => crate::logs::logs(ctx, caller, id, stderr).await?,
        Request::EnvCreate { name, from, node } => {
            crate::envs::create(ctx, caller, &name, &from, node.as_deref()).await?
        }
        Request::EnvList => crate::envs::list(ctx).await?,
        Request::EnvRm { name } => crate::envs::remove(ctx, caller, &name).await?,
        Request::EnvShell { name, node } => crate::env_edit::shell(ctx, caller, &name, node).await?,
        Request::EnvCommit { name, message } => crate::env_edit::commit(ctx, caller, &name, message).await?,
        Request::IpReserve { node, ip, ttl_secs } => crate::overlay::reserve(ctx, caller, node, ip, ttl_secs).await?,
        Request::IpList => crate::overlay::list(ctx).await?,
        Request::IpRelease { ip } => crate::overlay::release(ctx, caller, &ip).await?,
        Request::Overlay => crate::overlay::view(ctx).await?,
        Request::VpsStart { id, on } => crate::vps::start(ctx, caller, id, on).await?,
        Request::VpsSnapshot { id, message } => crate::vps::snapshot(ctx, caller, id, message).await?,
        Request::VpsSnapshots { id } => crate::vps::snapshots(ctx, caller, id).await?,
        Request::VpsSnapshotRm { id, seq } => crate::vps::snapshot_rm(ctx, caller, id, seq).await?,
        Request::VpsRestore { id, seq } => crate::vps::restore(ctx, caller, id, seq).await?,
        Request::UserKeyAdd { key, proof } => crate::gateway::add_key(ctx, caller, &key, &proof).await?,
        Request::UserKeys => crate::gateway::keys(ctx, caller).await?,
        Request::UserKeyRm { key } => crate::gateway::remove_key(ctx, caller, &key).await?,
        Request::VpsRemove { id } => crate::vps::remove(ctx, caller, id).await?,
        Request::VpsKeys { id, add, remove } => crate::vps::keys(ctx, caller, id, add, remove).await?,
        Request::VpsShare { id, user, share } => crate::vps::share(ctx, caller, id, &user, share).await?,
        Request::VpsShares { id } => crate::vps::shares(ctx, caller, id).await?,
        Request::ApiTokenCreate { name, ttl_secs, role } => {
            crate::api_tokens::create(ctx, caller, &name, ttl_secs, role).await?
        }
        Request::ApiTokenList { user } => crate::api_tokens::list(ctx, caller, user).await?,
        Request::ApiTokenRevoke { name, user } => crate::api_tokens::revoke(ctx, caller, &name, user).await?,
        Request::TaskApprove { id } => crate::approvals::approve(ctx, caller, id).await?,
        Request::TaskReject { id, reason } => crate::approvals::reject(ctx, caller, id, &reason).await?,
        Request::UserLimits { name, set, reset } => crate::limits::handle(ctx, caller, name, set, reset).await?,
        Request::Progress { key } => Response::Progress(ctx.ops.get(&key)),
        Request::WebLink => crate::web_logins::link(ctx, caller).await?,
        Request::WebSessions { user } => crate::web_logins::list(ctx, caller, user).await?,
        Request::WebSessionRevoke { id, user } => crate::web_logins::revoke(ctx, caller, id, user).await?,
    })
}

fn check_ttl(ctx: &Ctx, ttl_secs: u64) -> HostResult<()> {
    let max = ctx.cfg.max_token_ttl.as_secs();
    if ttl_secs == 0 || ttl_secs > max {
        return Err(refused(
            ErrorKind::Invalid,
            format!("token lifetime must be between 1s and {max}s (max_token_ttl)"),
        ));
    }
    Ok(())
}

pub(crate) async fn create_node_token(
    ctx: &Ctx,
    actor: &str,
    ttl_secs: u64,
    uses: u32,
) -> anyhow::Result<TokenCreated> {
    create_token(ctx, actor, ttl_secs, uses, TokenPurpose::Node, None).await
}

async fn create_token(
    ctx: &Ctx,
    actor: &str,
    ttl_secs: u64,
    uses: u32,
    purpose: TokenPurpose,
    user: Option<(String, Role)>,
) -> anyhow::Result<TokenCreated> {
    let token = JoinToken::generate(&mut rand::rng(), ctx.ca_fp);
    let now = ctx.clock.now_s();
    let expires_at = now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
    let detail = match &user {
        Some((n, r)) => format!("invite {} for user {n} ({})", token.id, r.as_str()),
        None => format!("token {} ({uses} uses)", token.id),
    };
    ctx.store
        .insert_token(&TokenRecord {
            id: token.id.clone(),
            secret_hash: token.secret_hash(),
            purpose,
            user,
            created_by: actor.to_owned(),
            created_at: now,
            expires_at,
            uses_left: uses,
            revoked: false,
        })
        .await?;
    ctx.store
        .event(ctx.clock.now_ms(), actor, "token.create", &detail)
        .await?;
    Ok(TokenCreated {
        id: token.id.clone(),
        token: token.to_string(),
        expires_at_ms: crate::clock::ms(expires_at),
        uses,
    })
}

async fn renew(ctx: &Ctx, caller: &Caller, csr_pem: &str) -> HostResult<Response> {
    let (subject, lifetime) = match caller {
        Caller::Node(n) => (Subject::Node(n.clone()), ctx.cfg.node_cert_lifetime),
        Caller::User { name, .. } => (Subject::User(name.clone()), ctx.cfg.user_cert_lifetime),
    };
    let (cert_pem, info) = match ctx.issue(csr_pem, &subject, lifetime) {
        Ok(x) => x,
        Err(e) => return Err(refused(ErrorKind::Invalid, e)),
    };
    match caller {
        Caller::Node(n) => ctx.store.set_node_cert(n, &info.serial, info.not_after).await?,
        Caller::User { name, .. } => {
            let cert = river_store::IssuedCert {
                serial: &info.serial,
                expires_at: info.not_after,
            };
            ctx.store.renew_user_cert(name, &cert).await?;
        }
    }
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "cert.renew", &info.serial)
        .await?;
    Ok(Response::Renewed { cert_pem })
}

fn view(ctx: &Ctx, n: NodeRecord) -> NodeView {
    let state = ctx.registry.state(&n.name).unwrap_or(n.state);
    NodeView {
        name: n.name,
        state,
        address: n.address,
        info: n.info,
        usage: n.usage,
        last_heartbeat_ms: n.last_heartbeat_ms,
        joined_at_ms: crate::clock::ms(n.joined_at),
        cert_expires_at_ms: crate::clock::ms(n.cert_expires_at),
    }
}

async fn status(ctx: &Ctx) -> anyhow::Result<ClusterStatus> {
    let nodes: Vec<NodeView> = ctx.store.nodes().await?.into_iter().map(|n| view(ctx, n)).collect();
    let online: Vec<&NodeView> = nodes.iter().filter(|n| n.state == NodeState::Online).collect();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let unfinished = ctx.store.unfinished_tasks().await?;
    let queued = unfinished.iter().filter(|t| t.state == TaskState::Queued).count();
    Ok(ClusterStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ca_fingerprint: hex::encode(ctx.ca_fp),
        nodes_online: count(online.len()),
        nodes_offline: count(nodes.len() - online.len()),
        cores: online.iter().map(|n| n.info.cores).sum(),
        memory_bytes: online.iter().map(|n| n.info.memory_bytes).sum(),
        gpus: count(online.iter().map(|n| n.info.gpus.len()).sum()),
        tasks_queued: count(queued),
        tasks_active: count(
            unfinished
                .iter()
                .filter(|t| matches!(t.state, TaskState::Assigned | TaskState::Running | TaskState::Paused))
                .count(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role) -> Caller {
        Caller::User { name: "u".into(), role }
    }

    #[test]
    fn viewers_read_admins_change() {
        assert!(authorize(&user(Role::Viewer), &Request::NodeList).is_ok());
        assert!(authorize(&user(Role::Viewer), &Request::NodeRemove { name: "a".into() }).is_err());
        assert!(authorize(&user(Role::Operator), &Request::TokenCreate { ttl_secs: 1, uses: 1 }).is_err());
        assert!(authorize(&user(Role::Admin), &Request::TokenCreate { ttl_secs: 1, uses: 1 }).is_ok());
    }

    #[test]
    fn operators_invite_only_below_themselves() {
        let invite = |role| Request::UserInvite {
            name: "x".into(),
            role,
            ttl_secs: 60,
        };
        assert!(authorize(&user(Role::Operator), &invite(Role::User)).is_ok());
        assert!(authorize(&user(Role::Operator), &invite(Role::Operator)).is_err());
        assert!(authorize(&user(Role::Admin), &invite(Role::Admin)).is_ok());
        assert!(authorize(&user(Role::User), &invite(Role::Viewer)).is_err());
    }

    #[test]
    fn nodes_can_only_renew() {
        let node = Caller::Node("n".into());
        assert!(authorize(&node, &Request::Renew { csr_pem: String::new() }).is_ok());
        assert!(authorize(&node, &Request::NodeList).is_err());
        assert!(authorize(&node, &Request::TokenCreate { ttl_secs: 1, uses: 1 }).is_err());
    }
}
