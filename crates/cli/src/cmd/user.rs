//! `river user …`, `river login` and `river whoami`.

use crate::args::{LoginArgs, Output, UserCmd};
use crate::client::{now_s, once};
use crate::output::{ago, show, table};
use anyhow::Context as _;
use river_proto::msg::{Request, Response, Role};
use std::path::Path;

pub async fn run(cmd: UserCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Invite { name, role, ttl } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let req = Request::UserInvite {
                name: name.clone(),
                role,
                ttl_secs: ttl.as_secs().max(1),
            };
            let Response::TokenCreated(t) = once(dir, req).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "one-time invite for {name} ({}), expires {}; they run:\n  river login HOST:PORT --token {}",
                    role.as_str(),
                    ago(t.expires_at, now_s()),
                    t.token
                );
            })
        }
        UserCmd::List => {
            let Response::Users(users) = once(dir, Request::UserList).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &users, |users| {
                let rows = users
                    .iter()
                    .map(|u| vec![u.name.clone(), u.role.as_str().into(), ago(u.created_at, now_s())])
                    .collect();
                table(&["NAME", "ROLE", "CREATED"], rows);
            })
        }
    }
}

pub async fn login(a: LoginArgs, dir: &Path) -> anyhow::Result<()> {
    if river_creds::Bundle::exists(dir) {
        eprintln!("note: replacing the credentials in {}", dir.display());
    }
    let bundle = river_mesh::client::enrol(&a.host, &a.token, "user", "user")
        .await
        .context("login failed")?;
    bundle.save(dir)?;
    let expires = bundle
        .cert_info()
        .map(|i| ago(i.not_after, now_s()))
        .unwrap_or_default();
    println!(
        "logged in to {} as {}; credentials in {} (certificate expires {expires}, renewed automatically when used)",
        a.host,
        bundle.meta.name,
        dir.display()
    );
    Ok(())
}

pub async fn whoami(dir: &Path, output: Output) -> anyhow::Result<()> {
    let Response::WhoAmI { identity, role } = once(dir, Request::WhoAmI).await? else {
        anyhow::bail!("unexpected answer")
    };
    let v = serde_json::json!({ "identity": identity, "role": role.map(|r| r.as_str()) });
    show(output, &v, |_| match role {
        Some(r) => println!("{identity} ({})", r.as_str()),
        None => println!("{identity}"),
    })
}
