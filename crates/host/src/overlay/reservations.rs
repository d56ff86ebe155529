//! IP reservations: an address on a node held for a while, with an HMAC-signed token that a
//! task (or a group's members, at submit) claims once; held until its task ends.

use super::{off, taken, Claim, HOST_MEMBER, MAX_TTL};
use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_overlay::net::free_address;
use river_proto::msg::{ErrorKind, IpReservation, IpView, Response, Role as UserRole};
use river_store::{Reservation, StoreError};
use std::net::Ipv4Addr;
use std::time::Duration;

pub(crate) async fn reserve(
    ctx: &Ctx,
    caller: &Caller,
    node: Option<String>,
    ip: Option<String>,
    ttl_secs: u64,
) -> HostResult<Response> {
    let Some(o) = ctx.overlay.as_ref() else {
        return Err(off());
    };
    let ttl = Duration::from_secs(ttl_secs);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(refused(ErrorKind::Invalid, "--ttl must be between 1s and 7 days"));
    }
    let ip: Option<Ipv4Addr> = match ip.as_deref().map(str::parse) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            return Err(refused(
                ErrorKind::Invalid,
                format!("`{}` is not an IPv4 address", ip.unwrap_or_default()),
            ))
        }
    };
    let members = o.members();
    let runners = || members.iter().filter(|(n, _)| n.as_str() != HOST_MEMBER);
    let node = match (node, ip) {
        (Some(n), _) => n,
        (None, Some(ip)) => match runners().find(|(_, (s, _))| s.contains(ip)) {
            Some((n, _)) => n.clone(),
            None => {
                return Err(refused(
                    ErrorKind::Invalid,
                    format!("{ip} is in no node's overlay subnet; `river node overlay` lists them"),
                ))
            }
        },
        // The online node with the fewest overlay addresses in use.
        (None, None) => {
            let taken = taken(ctx).await?;
            let online = runners().filter(|(n, _)| ctx.registry.connected(n));
            match online.min_by_key(|(_, (s, _))| taken.iter().filter(|ip| s.contains(**ip)).count()) {
                Some((n, _)) => n.clone(),
                None => {
                    return Err(refused(
                        ErrorKind::Invalid,
                        "no node is online on the overlay to reserve an address on",
                    ))
                }
            }
        }
    };
    let Some(subnet) = o.subnet_of(&node).filter(|_| node != HOST_MEMBER) else {
        return Err(refused(
            ErrorKind::NotFound,
            format!(
                "node {node} has no overlay subnet (unknown, or it has not connected since the overlay was turned on)"
            ),
        ));
    };
    let taken = taken(ctx).await?;
    let ip = match ip {
        Some(ip) if !river_overlay::net::assignable(&subnet).any(|a| a == ip) => {
            return Err(refused(
                ErrorKind::Invalid,
                format!("{ip} is not a container address of node {node}'s subnet {subnet}"),
            ))
        }
        Some(ip) if taken.contains(&ip) => {
            return Err(refused(
                ErrorKind::Conflict,
                format!("{ip} is in use or reserved already"),
            ))
        }
        Some(ip) => ip,
        None => match free_address(&subnet, &taken) {
            Some(ip) => ip,
            None => {
                return Err(refused(
                    ErrorKind::Conflict,
                    format!("node {node}'s subnet {subnet} has no free address"),
                ))
            }
        },
    };
    let now = ctx.clock.now_ms();
    let expires_at_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let claim = Claim {
        ip,
        node: node.clone(),
        exp: expires_at_ms,
        nonce: hex::encode(nonce),
    };
    // Expired leftovers of this address go first, so the insert does not trip over them.
    ctx.store.release_reservations(now).await?;
    let r = Reservation {
        ip: ip.to_string(),
        node: node.clone(),
        owner: caller.actor(),
        nonce: claim.nonce.clone(),
        created_at_ms: now,
        expires_at_ms,
        task_id: None,
    };
    match ctx.store.insert_reservation(&r).await {
        Ok(()) => {}
        Err(StoreError::Exists(_)) => return Err(refused(ErrorKind::Conflict, format!("{ip} was reserved meanwhile"))),
        Err(e) => return Err(e.into()),
    }
    ctx.store
        .event(now, &caller.actor(), "ip.reserve", &format!("{ip} on {node}"))
        .await?;
    Ok(Response::IpReserved(IpReservation {
        ip: ip.to_string(),
        node,
        token: o.sign(&claim),
        expires_at_ms,
    }))
}

pub(crate) async fn list(ctx: &Ctx) -> HostResult<Response> {
    if ctx.overlay.is_none() {
        return Err(off());
    }
    let now = ctx.clock.now_ms();
    ctx.store.release_reservations(now).await?;
    Ok(Response::Ips(
        ctx.store
            .reservations()
            .await?
            .into_iter()
            .filter(|r| r.task_id.is_some() || r.expires_at_ms > now)
            .map(|r| IpView {
                ip: r.ip,
                node: r.node,
                owner: r.owner,
                expires_at_ms: r.expires_at_ms,
                task: r.task_id,
            })
            .collect(),
    ))
}

pub(crate) async fn release(ctx: &Ctx, caller: &Caller, ip: &str) -> HostResult<Response> {
    let Some(r) = ctx.store.reservation(ip).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("{ip} is not reserved; `river ip list` shows reservations"),
        ));
    };
    let operator = matches!(caller, Caller::User { role, .. } if *role >= UserRole::Operator);
    if r.owner != caller.actor() && !operator {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("{ip} was reserved by {}, not you", r.owner),
        ));
    }
    if let Some(task) = r.task_id {
        let live = ctx.store.task(task).await?.is_some_and(|t| !t.state.is_final());
        if live {
            return Err(refused(
                ErrorKind::Conflict,
                format!("{ip} is in use by task {task}; it is released when the task ends"),
            ));
        }
    }
    ctx.store.delete_reservation(ip).await?;
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "ip.release", ip)
        .await?;
    Ok(Response::Done {
        message: format!("released {ip}"),
    })
}

/// A submitted spec's reservation token, checked: pins the spec to the reserved node and drops
/// the token. Returns the reserved address (the task's, `Assigned::ip`) and what to claim it
/// with once the task has an id.
pub(crate) async fn take_token(
    ctx: &Ctx,
    spec: &mut river_proto::msg::TaskSpec,
) -> HostResult<Option<(String, String)>> {
    let Some(token) = spec.ip_token.take() else {
        return Ok(None);
    };
    let Some(o) = ctx.overlay.as_ref() else {
        return Err(off());
    };
    let no = |why: &str| {
        Err(refused(
            ErrorKind::Forbidden,
            format!("reservation token refused: {why}"),
        ))
    };
    let Some(claim) = o.verify(&token.0) else {
        return no("it was not issued by this cluster or has been altered");
    };
    if claim.exp <= ctx.clock.now_ms() {
        return no("it has expired; reserve again with `river ip reserve`");
    }
    let ip = claim.ip.to_string();
    match ctx.store.reservation(&ip).await? {
        Some(r) if r.nonce == claim.nonce && r.task_id.is_none() => {}
        Some(r) if r.nonce == claim.nonce => {
            return no(&format!("it was used already, by task {}", r.task_id.unwrap_or(0)))
        }
        _ => return no("the reservation was released"),
    }
    if spec.targets.is_empty() {
        spec.targets = vec![claim.node.clone()];
    }
    let elsewhere = spec
        .targets
        .iter()
        .any(|t| t.split(':').next() != Some(claim.node.as_str()));
    if spec.targets.len() != 1 || elsewhere {
        return Err(refused(
            ErrorKind::Invalid,
            format!(
                "the reserved address {ip} is on node {}: submit one task, targeted there or not at all",
                claim.node
            ),
        ));
    }
    if spec.network.as_deref().is_some_and(|n| n != "overlay") || spec.no_container {
        return Err(refused(
            ErrorKind::Invalid,
            "a reserved address needs the task on the overlay network",
        ));
    }
    Ok(Some((ip, claim.nonce)))
}

/// Claims the reservation for the task just queued with it.
pub(crate) async fn claim(ctx: &Ctx, ip: &str, nonce: &str, task: u64) -> anyhow::Result<bool> {
    Ok(ctx.store.claim_reservation(ip, nonce, task, ctx.clock.now_ms()).await?)
}

/// Records addresses given to a group's members at submit as claimed reservations, so they are
/// held from now until each member ends.
pub(crate) async fn hold(ctx: &Ctx, owner: &str, node: &str, ip: Ipv4Addr, task: u64) -> anyhow::Result<()> {
    let now = ctx.clock.now_ms();
    let nonce = format!("group-{task}");
    ctx.store
        .insert_reservation(&Reservation {
            ip: ip.to_string(),
            node: node.to_owned(),
            owner: owner.to_owned(),
            nonce: nonce.clone(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(i64::try_from(MAX_TTL.as_millis()).unwrap_or(i64::MAX)),
            task_id: None,
        })
        .await?;
    ctx.store.claim_reservation(&ip.to_string(), &nonce, task, now).await?;
    Ok(())
}
