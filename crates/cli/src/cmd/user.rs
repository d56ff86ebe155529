//! `river user …`, `river login` and `river whoami`.

use crate::args::{LoginArgs, Output, UserCmd, UserKeyCmd};
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
            let what = format!("one-time invite for {name} ({})", role.as_str());
            login_token(dir, req, output, &what, "they run").await?;
            if output == Output::Table {
                eprintln!("or, where the host serves the dashboard at its own address ([web]), they paste it on its /login page");
            }
            Ok(())
        }
        UserCmd::Reissue { name, ttl } => {
            let req = Request::UserReissue {
                name: name.clone(),
                ttl_secs: ttl.as_secs().max(1),
            };
            let what = format!("one-time login for {name}");
            login_token(
                dir,
                req,
                output,
                &what,
                "their earlier certificates stop working when they run",
            )
            .await
        }
        UserCmd::Rm { name, kill_tasks } => done(dir, Request::UserRemove { name, kill_tasks }).await,
        UserCmd::SetRole { name, role } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            done(dir, Request::UserSetRole { name, role }).await
        }
        UserCmd::Disable { name } => done(dir, Request::UserEnable { name, enabled: false }).await,
        UserCmd::Enable { name } => done(dir, Request::UserEnable { name, enabled: true }).await,
        UserCmd::List => {
            let Response::Users(users) = once(dir, Request::UserList).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &users, |users| {
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.role.as_str().into(),
                            ago(u.created_at_ms / 1000, now_s()),
                            match (u.removed_at_ms.map(|ms| ms / 1000), u.disabled) {
                                (Some(at), _) => format!("removed {}", ago(at, now_s())),
                                (None, true) => "disabled".into(),
                                (None, false) => String::new(),
                            },
                        ]
                    })
                    .collect();
                table(&["NAME", "ROLE", "CREATED", "STATE"], rows);
            })
        }
        UserCmd::Key(UserKeyCmd::Add { file }) => {
            let keys = crate::cmd::vps::read_keys(&file)?;
            let [key] = &keys[..] else {
                anyhow::bail!(
                    "{} holds {} keys; give one .pub file per key (its private key signs it)",
                    file.display(),
                    keys.len()
                );
            };
            let proof = key_proof(dir, &file, key)?;
            let last = Some(
                once(
                    dir,
                    Request::UserKeyAdd {
                        key: key.clone(),
                        proof,
                    },
                )
                .await?,
            );
            let Some(Response::UserKeys(keys)) = last else {
                anyhow::bail!("unexpected answer")
            };
            eprintln!(
                "you have {} key(s) for the SSH gateway; e.g. ssh -J river@{} root@vps-ID",
                keys.len(),
                crate::client::host_address(dir)
            );
            Ok(())
        }
        UserCmd::Key(UserKeyCmd::List) => {
            let Response::UserKeys(keys) = once(dir, Request::UserKeys).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &keys, |keys| {
                let rows = keys
                    .iter()
                    .map(|k| {
                        let comment = k.key.split_whitespace().nth(2).unwrap_or("").to_owned();
                        let kind = k.key.split_whitespace().next().unwrap_or("").to_owned();
                        vec![k.fingerprint.clone(), kind, comment, ago(k.added_at_ms / 1000, now_s())]
                    })
                    .collect();
                table(&["FINGERPRINT", "TYPE", "COMMENT", "ADDED"], rows);
            })
        }
        UserCmd::Token(cmd) => crate::cmd::api_token::run(cmd, dir, output).await,
        UserCmd::Limits(a) => crate::cmd::api_token::limits(a, dir, output).await,
        UserCmd::Key(UserKeyCmd::Rm { key }) => {
            // A file's first key, or the text given.
            let key = match std::fs::metadata(&key) {
                Ok(m) if m.is_file() => crate::cmd::vps::read_keys(Path::new(&key))?.remove(0),
                _ => key,
            };
            let Response::Done { message } = once(dir, Request::UserKeyRm { key }).await? else {
                anyhow::bail!("unexpected answer")
            };
            println!("{message}");
            Ok(())
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

/// Sends `req` and prints the host's sentence.
async fn done(dir: &Path, req: Request) -> anyhow::Result<()> {
    crate::cmd::vps::done(once(dir, req).await?)
}

/// `river audit`.
pub async fn audit(
    dir: &Path,
    user: Option<String>,
    since: Option<std::time::Duration>,
    limit: u32,
    output: Output,
) -> anyhow::Result<()> {
    let since_ms = since.map(|d| (now_s() - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2000)) * 1000);
    let req = Request::Audit { user, since_ms, limit };
    let Response::Events(events) = once(dir, req).await? else {
        anyhow::bail!("unexpected answer")
    };
    show(output, &events, |events| {
        let rows = events
            .iter()
            .map(|e| {
                vec![
                    ago(e.at_ms / 1000, now_s()),
                    e.actor.clone(),
                    e.action.clone(),
                    e.detail.clone(),
                ]
            })
            .collect();
        table(&["WHEN", "WHO", "WHAT", "DETAIL"], rows);
    })
}

/// Asks for a token to `river login` with (an invite, a reissue) and prints it: the token alone on
/// stdout, what it is for on stderr.
async fn login_token(dir: &Path, req: Request, output: Output, what: &str, then: &str) -> anyhow::Result<()> {
    let Response::TokenCreated(t) = once(dir, req).await? else {
        anyhow::bail!("unexpected answer")
    };
    show(output, &t, |t| {
        println!("{}", t.token);
        eprintln!(
            "{what}, expires {}; {then}:\n  river login {} --token {}",
            ago(t.expires_at_ms / 1000, now_s()),
            crate::client::host_address(dir),
            t.token
        );
    })
}

/// `river logout`.
pub async fn logout(dir: &Path, local: bool) -> anyhow::Result<()> {
    let bundle = river_creds::Bundle::load(dir).context("no credentials here to log out of")?;
    if !local {
        let serial = bundle.cert_info().context("reading the certificate")?.serial;
        once(dir, Request::Logout { serial }).await.context(
            "the host could not revoke this certificate; `river logout --local` only deletes it here (it then stays valid until it expires)",
        )?;
    }
    river_creds::Bundle::remove(dir)?;
    eprintln!(
        "logged out{}; credentials deleted from {}",
        if local {
            " here only (the certificate was not revoked)"
        } else {
            ""
        },
        dir.display()
    );
    Ok(())
}

/// An SSH signature, by the private key of `file` (next to it, or in ssh-agent), of what
/// registering `key` for this account means: the host's proof that the key is the caller's.
fn key_proof(dir: &Path, file: &Path, key: &str) -> anyhow::Result<String> {
    let bundle = river_creds::Bundle::load(dir).context("no credentials here; `river login` first")?;
    let user = bundle
        .meta
        .name
        .strip_prefix("user ")
        .unwrap_or(&bundle.meta.name)
        .to_owned();
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        anyhow::bail!("{} is not an SSH public key", file.display());
    };
    let message = river_proto::msg::key_proof_message(&user, kind, data);
    // From a file, not a pipe: ssh-keygen may leave before it reads (no private key), and a
    // write to a pipe with no reader would end this process.
    let input = dir.join(format!(".key-proof-{}", std::process::id()));
    std::fs::write(&input, message.as_bytes())?;
    let signed = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", river_proto::msg::KEY_PROOF_NAMESPACE, "-f"])
        .arg(file)
        .stdin(std::fs::File::open(&input)?)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running ssh-keygen (OpenSSH's) to sign with the key: is it installed?")
        .and_then(|c| Ok(c.wait_with_output()?));
    let _ = std::fs::remove_file(&input);
    let out = signed?;
    anyhow::ensure!(
        out.status.success(),
        "ssh-keygen could not sign with the private key of {} (it must be next to it, or in ssh-agent): the host needs that proof that the key is yours",
        file.display()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
