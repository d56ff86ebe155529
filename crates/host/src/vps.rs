//! VPSs on the host. A VPS is a task whose spec carries [`VpsSpec`]: it is placed, queued and
//! limited like any task, but its container is stopped and kept rather than ended, started again
//! on its node, and reached over SSH served by its runner (no sshd in the image). This module
//! checks a VPS at creation, starts and removes VPSs, changes their keys, and turns a user's
//! forward to a VPS's port 22 into an `Ssh` stream to the runner carrying the keys and the VPS's
//! host key. The host key is derived here from a secret in the state directory, so it is the same
//! on whichever node the VPS runs and `known_hosts` never complains.

mod share;
mod snapshots;
use crate::auth::may_touch;
use crate::auth::Caller;
use crate::lifecycle;
use crate::lifecycle::state_of;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use base64::Engine as _;
use river_proto::msg::{ErrorKind, HostMsg, Response, SshServe, TaskSpec};
use river_store::TaskRecord;
use river_task::lifecycle::Event;
use river_task::state::TaskState;
pub(crate) use share::{extra_keys, share, shared_with, shares};
use snapshots::{drop_snapshot, move_to};
pub(crate) use snapshots::{restore, snapshot, snapshot_rm, snapshot_stopped, snapshots};

/// What a VPS runs when the user gives no command: nothing but staying up, on any image with a
/// POSIX shell (busybox included), and a clean exit when stopped.
pub(crate) fn keepalive() -> Vec<String> {
    [
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One OpenSSH public key line, checked and reduced to `TYPE BASE64 [COMMENT]`: the type must be
/// one SSH knows and the key data must be base64 of a key blob of that type. Options
/// (`from=…`, `command=…`) are refused rather than silently ignored.
pub(crate) fn parse_key(line: &str) -> Result<String, String> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{:?} is not an SSH public key (expected a line like `ssh-ed25519 AAAA… you@laptop`, as in ~/.ssh/id_ed25519.pub)",
            abbreviate(line)
        ));
    };
    const KINDS: [&str; 8] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
    ];
    if !KINDS.contains(&kind) {
        return Err(format!(
            "{:?}: unknown key type {kind:?} (authorized_keys options are not supported; give the bare public key)",
            abbreviate(line)
        ));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| format!("{:?}: the key data is not base64", abbreviate(line)))?;
    // The blob starts with its own type name, length-prefixed.
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(format!("{:?}: the key data is not a {kind} key", abbreviate(line)));
    }
    let comment: Vec<&str> = parts.collect();
    Ok(if comment.is_empty() {
        format!("{kind} {data}")
    } else {
        format!("{kind} {data} {}", comment.join(" "))
    })
}

fn abbreviate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// The key part (`TYPE BASE64`) that identifies a key, whatever its comment.
pub(crate) fn key_id(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Fills in what a new VPS leaves out (its keys checked and deduplicated, the command that keeps
/// it up); its shape was judged by `river_task::workload`. `Err` is the refusal to send back.
pub(crate) fn prepare(spec: &mut TaskSpec) -> HostResult<()> {
    let Some(vps) = spec.vps.as_mut() else {
        return Ok(());
    };
    let mut keys: Vec<String> = Vec::with_capacity(vps.ssh_keys.len());
    for k in &vps.ssh_keys {
        let k = parse_key(k).map_err(|e| refused(ErrorKind::Invalid, e))?;
        if !keys.iter().any(|have| key_id(have) == key_id(&k)) {
            keys.push(k);
        }
    }
    vps.ssh_keys = keys;
    if spec.command.is_empty() {
        spec.command = keepalive();
    }
    Ok(())
}

async fn vps_task(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<TaskRecord> {
    let Some(t) = ctx.store.task(id).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no VPS {id}; `river vps list` shows them"),
        ));
    };
    if t.spec.vps.is_none() {
        return Err(refused(
            ErrorKind::Invalid,
            format!("task {id} is not a VPS; `river task …` manages it"),
        ));
    }
    if !may_touch(caller, &t) {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("VPS {id} belongs to {}", t.owner),
        ));
    }
    Ok(t)
}

/// The target that puts a VPS back where its container is: its node, and its GPUs (a container's
/// devices are fixed when it is made; its cores and memory are not).
fn home(p: &river_proto::msg::TaskPlacement) -> String {
    if p.gpus.is_empty() {
        p.node.clone()
    } else {
        let gpus: Vec<String> = p.gpus.iter().map(u32::to_string).collect();
        format!("{}::{}", p.node, gpus.join(","))
    }
}

/// Queues a stopped VPS to start again: on its node, with its overlay address, or (`on`) on
/// another node from its latest snapshot.
pub(crate) async fn start(ctx: &Ctx, caller: &Caller, id: u64, on: Option<String>) -> HostResult<Response> {
    let mut t = vps_task(ctx, caller, id).await?;
    let home_node = t.placement.as_ref().map(|p| p.node.clone());
    if let Some(on) = on.filter(|n| Some(n) != home_node.as_ref()) {
        return move_to(ctx, caller, t, on).await;
    }
    let state = state_of(&t);
    if state != TaskState::Stopped {
        return Err(refused(
            ErrorKind::Conflict,
            format!("VPS {id} is {}; only a stopped VPS can be started", t.state),
        ));
    }
    let Some(p) = t.placement.take() else {
        return Err(refused(ErrorKind::Internal, format!("VPS {id} has no node on record")));
    };
    t.target = Some(home(&p));
    t.assigned.ip = p.ip.clone();
    // Its container comes back as it was; should the node have lost it, a new one starts from the
    // latest snapshot rather than from the bare image.
    if let Some(latest) = ctx.store.snapshots(id).await?.pop() {
        t.spec.image = latest.image;
        t.assigned.archive = Some(latest.archive);
        t.spec.environment = None;
    }
    lifecycle::change(ctx, &mut t, Event::Requeued, None).await?;
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "vps.start", &id.to_string())
        .await?;
    let when = if ctx.registry.connected(&p.node) {
        String::new()
    } else {
        format!(" (node {} is offline: it starts when the node is back)", p.node)
    };
    Ok(Response::Done {
        message: format!("starting VPS {id} on {}{when}", p.node),
    })
}

/// Removes a VPS: its container (and disk) go on its node; the record stays, `killed`.
pub(crate) async fn remove(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<Response> {
    let mut t = vps_task(ctx, caller, id).await?;
    let state = state_of(&t);
    if state.is_final() {
        return Err(refused(ErrorKind::Conflict, format!("VPS {id} is already {}", t.state)));
    }
    if let Some(p) = t.placement.as_ref() {
        // Its disk is on the node: refuse rather than leave a container no one will remove.
        if !ctx.registry.send(&p.node, HostMsg::Remove { id }) {
            return Err(refused(
                ErrorKind::Conflict,
                format!(
                    "node {} of VPS {id} is not connected; try again when it is back",
                    p.node
                ),
            ));
        }
    }
    let why = format!("removed by {}", caller.actor());
    lifecycle::change(ctx, &mut t, Event::Ended(TaskState::Killed), Some(why)).await?;
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "vps.remove", &id.to_string())
        .await?;
    for s in ctx.store.snapshots(id).await? {
        drop_snapshot(ctx, id, s.seq).await;
    }
    ctx.kick.notify_one();
    Ok(Response::Done {
        message: format!("removed VPS {id}"),
    })
}

/// Adds and removes SSH keys; the next SSH connection sees the change.
pub(crate) async fn keys(
    ctx: &Ctx,
    caller: &Caller,
    id: u64,
    add: Vec<String>,
    remove: Vec<String>,
) -> HostResult<Response> {
    let mut t = vps_task(ctx, caller, id).await?;
    if state_of(&t).is_final() {
        return Err(refused(ErrorKind::Conflict, format!("VPS {id} is {}", t.state)));
    }
    let Some(vps) = t.spec.vps.as_mut() else {
        return Err(refused(ErrorKind::Invalid, format!("task {id} is not a VPS")));
    };
    for line in &add {
        let k = match parse_key(line) {
            Ok(k) => k,
            Err(e) => return Err(refused(ErrorKind::Invalid, e)),
        };
        if !vps.ssh_keys.iter().any(|have| key_id(have) == key_id(&k)) {
            vps.ssh_keys.push(k);
        }
    }
    for line in &remove {
        let before = vps.ssh_keys.len();
        // A whole key line, its `TYPE BASE64` part, or its comment.
        vps.ssh_keys.retain(|have| {
            let comment = have.split_whitespace().nth(2);
            !(key_id(have) == key_id(line) || comment.is_some_and(|c| c == line.trim()))
        });
        if vps.ssh_keys.len() == before {
            return Err(refused(
                ErrorKind::NotFound,
                format!("VPS {id} has no key {:?}", abbreviate(line)),
            ));
        }
    }
    if vps.ssh_keys.is_empty() && !vps.image_sshd {
        return Err(refused(
            ErrorKind::Invalid,
            format!("that would leave VPS {id} with no key: no one could log in; add another first"),
        ));
    }
    if !ctx.save_task(&t, t.state).await? {
        return Err(refused(
            ErrorKind::Conflict,
            format!("VPS {id} changed meanwhile; try again"),
        ));
    }
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "vps.keys", &id.to_string())
        .await?;
    Ok(Response::Task(Box::new(crate::tasks::view(ctx, caller, t))))
}

/// For a forward to port 22 of a VPS whose SSH river serves: what to send its runner instead.
pub(crate) fn ssh_route(ctx: &Ctx, t: &TaskRecord, port: u16) -> Option<SshServe> {
    let vps = t.spec.vps.as_ref().filter(|v| !v.image_sshd && port == 22)?;
    Some(SshServe {
        task: t.id,
        keys: vps.ssh_keys.clone(),
        host_key: ctx.vps_keys.seed(t.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPApQ0j57M7iGP/Usn4Gpx9FDHOqJCvgdjD3+Zj7Rpga";

    #[test]
    fn keys_are_checked_and_reduced_to_type_data_comment() {
        assert_eq!(
            parse_key(&format!("  {ED}   me@laptop  ")).unwrap(),
            format!("{ED} me@laptop")
        );
        assert_eq!(parse_key(ED).unwrap(), ED);
        assert!(parse_key("hello").unwrap_err().contains("not an SSH public key"));
        assert!(parse_key(&format!("from=\"10.0.0.1\" {ED}"))
            .unwrap_err()
            .contains("options are not supported"));
        assert!(parse_key("ssh-ed25519 !!!").unwrap_err().contains("not base64"));
        // An Ed25519 blob labelled as RSA.
        let data = ED.split(' ').nth(1).unwrap();
        assert!(parse_key(&format!("ssh-rsa {data}"))
            .unwrap_err()
            .contains("not a ssh-rsa key"));
    }

    #[test]
    fn a_vps_needs_a_key_one_node_and_gets_a_keepalive() {
        let mut spec = TaskSpec::new("busybox", Vec::new());
        spec.vps = Some(river_proto::msg::VpsSpec {
            ssh_keys: vec![format!("{ED} a"), format!("{ED} b")],
            image_sshd: false,
            generation: 0,
        });
        prepare(&mut spec).unwrap();
        assert_eq!(spec.command, keepalive());
        assert_eq!(
            spec.vps.as_ref().unwrap().ssh_keys,
            vec![format!("{ED} a")],
            "deduplicated"
        );
        let mut bad = spec.clone();
        bad.vps.as_mut().unwrap().ssh_keys = vec!["ssh-ed25519 !!!".into()];
        assert!(prepare(&mut bad).is_err(), "a key that does not parse is refused");
    }
}
