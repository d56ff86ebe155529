//! `river token …`.

use crate::args::{Output, TokenCmd};
use crate::client::{host_address, now_s, once};
use crate::output::{ago, show, table};
use river_proto::msg::{Request, Response, TokenPurpose};
use std::path::Path;

pub async fn run(cmd: TokenCmd, dir: &Path, output: Output) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { ttl, uses } => {
            let req = Request::TokenCreate {
                ttl_secs: ttl.as_secs().max(1),
                uses,
            };
            let Response::TokenCreated(t) = once(dir, req).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "join token {} ({} use{}, expires {}); on the new node run:\n  RIVER_JOIN_TOKEN={} river runner --join {}",
                    t.id,
                    t.uses,
                    if t.uses == 1 { "" } else { "s" },
                    ago(t.expires_at_ms / 1000, now_s()),
                    t.token,
                    host_address(dir)
                );
            })
        }
        TokenCmd::List => {
            let Response::Tokens(tokens) = once(dir, Request::TokenList).await? else {
                anyhow::bail!("unexpected answer")
            };
            show(output, &tokens, |tokens| {
                let now = now_s();
                let rows = tokens
                    .iter()
                    .map(|t| {
                        let state = if t.revoked {
                            "revoked"
                        } else if t.expires_at_ms / 1000 <= now {
                            "expired"
                        } else if t.uses_left == 0 {
                            "used"
                        } else {
                            "valid"
                        };
                        let purpose = match (&t.purpose, &t.user) {
                            (TokenPurpose::Node, _) => "node join".to_owned(),
                            (TokenPurpose::User, Some(u)) => format!("invite {u}"),
                            (TokenPurpose::User, None) => "invite".to_owned(),
                            (TokenPurpose::Reissue, Some(u)) => format!("reissue {u}"),
                            (TokenPurpose::Reissue, None) => "reissue".to_owned(),
                        };
                        vec![
                            t.id.clone(),
                            purpose,
                            state.into(),
                            t.uses_left.to_string(),
                            ago(t.expires_at_ms / 1000, now),
                        ]
                    })
                    .collect();
                table(&["ID", "FOR", "STATE", "USES LEFT", "EXPIRES"], rows);
            })
        }
        TokenCmd::Revoke { id } => {
            let Response::Done { message } = once(dir, Request::TokenRevoke { id }).await? else {
                anyhow::bail!("unexpected answer")
            };
            println!("{message}");
            Ok(())
        }
    }
}
