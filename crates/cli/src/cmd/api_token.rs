//! `river user token …` (API tokens for scripts and CI) and `river user limits`.

use crate::args::{LimitArgs, Output, UserTokenCmd};
use crate::client::{now_s, once};
use crate::output::{ago, show, table};
use river_proto::msg::{LimitValues, Request, Response, Role};
use std::path::Path;

pub async fn run(cmd: UserTokenCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        UserTokenCmd::Create { name, ttl, role } => {
            let role = role
                .map(|r| r.parse::<Role>())
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            let req = Request::ApiTokenCreate {
                name,
                ttl_secs: ttl.as_secs().max(1),
                role,
            };
            let Response::ApiTokenCreated(t) = once(dir, req).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "API token {} for {} ({}), expires {}; it is shown only now. Use it as:\n  curl --cacert {} -H \"Authorization: Bearer $TOKEN\" https://{}/api/status",
                    t.name,
                    t.user,
                    t.role.as_str(),
                    ago(t.expires_at_ms / 1000, now_s()),
                    dir.join("ca.crt").display(),
                    crate::client::host_address(dir),
                );
            })
        }
        UserTokenCmd::List { user } => {
            let Response::ApiTokens(tokens) = once(dir, Request::ApiTokenList { user }).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &tokens, |tokens| {
                let now = now_s();
                let rows = tokens
                    .iter()
                    .map(|t| {
                        let state = match t.revoked_at_ms.map(|ms| ms / 1000) {
                            Some(at) => format!("revoked {}", ago(at, now)),
                            None if t.expires_at_ms / 1000 <= now => "expired".into(),
                            None => "valid".into(),
                        };
                        vec![
                            t.name.clone(),
                            t.user.clone(),
                            t.role.as_str().into(),
                            state,
                            t.last_used_ms.map_or("never".into(), |ms| ago(ms / 1000, now)),
                            ago(t.expires_at_ms / 1000, now),
                        ]
                    })
                    .collect();
                table(&["NAME", "USER", "ROLE", "STATE", "LAST USED", "EXPIRES"], rows);
            })
        }
        UserTokenCmd::Revoke { name, user } => {
            crate::cmd::vps::done(once(dir, Request::ApiTokenRevoke { name, user }).await?)
        }
    }
}

/// `river user limits`.
pub async fn limits(a: LimitArgs, dir: &Path, output: Output) -> anyhow::Result<()> {
    let set = LimitValues {
        queued: a.queued,
        running_cores: a.running_cores,
        running_gpus: a.running_gpus,
        vps: a.vps,
        archive_mib: a.archive_mib,
    };
    let req = Request::UserLimits {
        name: a.name,
        set,
        reset: a.reset,
    };
    let Response::UserLimits(l) = once(dir, req).await? else {
        anyhow::bail!("unexpected answer")
    };
    show(output, &l, |l| {
        let row = |what: &str, v: Option<u32>, own: Option<u32>| {
            vec![
                what.to_owned(),
                match v {
                    Some(0) | None => "no limit".to_owned(),
                    Some(n) => n.to_string(),
                },
                if own.is_some() { "theirs" } else { "cluster default" }.to_owned(),
            ]
        };
        let (e, o) = (&l.effective, &l.overrides);
        println!("limits of {}:", l.user);
        table(
            &["LIMIT", "VALUE", "FROM"],
            vec![
                row("tasks waiting", e.queued, o.queued),
                row("cores held at once", e.running_cores, o.running_cores),
                row("GPUs held at once", e.running_gpus, o.running_gpus),
                row("VPSs", e.vps, o.vps),
                row("archives kept (MiB)", e.archive_mib, o.archive_mib),
            ],
        );
    })
}
