//! Limits on what one person or peer can take: connections without a certificate per address,
//! tasks waiting per user, and SSH gateway keys only for whoever holds them. In process: a real
//! host over QUIC on loopback.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use river_creds::Bundle;
use river_proto::msg::{ErrorKind, NodeState, Request, Response};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn an_address_holds_only_a_few_connections_without_a_certificate() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let ca = Bundle::load(&host.admin_dir).unwrap().ca_der().unwrap();
    let endpoint = river_mesh::client_endpoint(host.mesh_addr).unwrap();
    let cfg = river_mesh::client_config(None, river_mesh::Trust::Ca(ca)).unwrap();
    // Connections that never join, held: each one holds buffers on the host.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            river_mesh::connect(&endpoint, host.mesh_addr, cfg.clone())
                .await
                .unwrap(),
        );
    }
    let mut refused = 0;
    for c in &held {
        if let Ok(reason) = tokio::time::timeout(Duration::from_secs(2), c.closed()).await {
            assert!(reason.to_string().contains("too many connections"), "{reason}");
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        4,
        "an address held {} idle connections without a certificate",
        8 - refused
    );
    // Certificate holders are not counted: the admin is answered.
    assert!(matches!(
        call(&admin(&host).await, Request::NodeList).await,
        Response::Nodes(_)
    ));
    host.shutdown().await;
}

#[tokio::test]
async fn a_user_may_have_only_so_many_tasks_waiting_and_is_told_why() {
    let d = tmp();
    let mut cfg = host_cfg(d.path());
    cfg.max_queued_per_user = 3;
    let host = start_host(cfg).await;
    let admin = admin(&host).await;
    // A node that was here and is away: what is submitted for it waits.
    let (_cfg, r) = runner(&host, d.path(), "away").await;
    eventually(T, "node online", || async {
        node_state(&host, "away").await == Some(NodeState::Online)
    })
    .await;
    r.shutdown().await;
    eventually(T, "node offline", || async {
        node_state(&host, "away").await == Some(NodeState::Offline)
    })
    .await;
    let ann = user_conn(&host, &admin, "ann").await;
    let mut spec = river_proto::msg::TaskSpec::new("img", vec!["true".into()]);
    spec.targets = vec!["away".into(); 2];
    assert!(matches!(
        call(&ann, Request::TaskSubmit(spec.clone())).await,
        Response::TaskSubmitted { .. }
    ));
    // Two more would make four.
    match call(&ann, Request::TaskSubmit(spec.clone())).await {
        Response::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::Conflict);
            assert!(
                message.contains("2 task(s) waiting") && message.contains("at most 3"),
                "{message}"
            );
        }
        other => panic!("over the limit: {other:?}"),
    }
    // One more fits; the limit is per user: another is not held back by ann's.
    spec.targets = vec!["away".into()];
    assert!(matches!(
        call(&ann, Request::TaskSubmit(spec.clone())).await,
        Response::TaskSubmitted { .. }
    ));
    let bob = user_conn(&host, &admin, "bob").await;
    spec.targets = vec!["away".into(); 3];
    assert!(matches!(
        call(&bob, Request::TaskSubmit(spec)).await,
        Response::TaskSubmitted { .. }
    ));
    host.shutdown().await;
}

/// An SSH signature by the key at `key` (private) of `message` in river's gateway-key namespace.
fn ssh_sign(key: &std::path::Path, message: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", river_proto::msg::KEY_PROOF_NAMESPACE, "-f"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_gateway_key_is_registered_only_by_whoever_holds_its_private_key() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let admin = admin(&host).await;
    let alice = user_conn(&host, &admin, "alice").await;
    let mallory = user_conn(&host, &admin, "mallory").await;
    let keygen = |name: &str| {
        let path = d.path().join(name);
        let o = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success());
        let public = std::fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned();
        (path, public)
    };
    let (alice_key, alice_pub) = keygen("alice_key");
    let (mallory_key, _) = keygen("mallory_key");
    let parts: Vec<&str> = alice_pub.split_whitespace().collect();
    let add = |key: &str, proof: String| Request::UserKeyAdd {
        key: key.to_owned(),
        proof,
    };
    let refused = |r: Response| match r {
        Response::Error { kind, message } => {
            assert_eq!(kind, ErrorKind::Forbidden, "{message}");
            message
        }
        other => panic!("mallory registered alice's key: {other:?}"),
    };
    // Mallory has alice's public key (it is public) and would register it to her own account, so
    // that alice's gateway logins land there: with no proof, with one signed by her own key, and
    // with alice's own proof (made for alice's account), replayed.
    let why = refused(call(&mallory, add(&alice_pub, String::new())).await);
    assert!(why.contains("proof"), "{why}");
    let own = ssh_sign(
        &mallory_key,
        &river_proto::msg::key_proof_message("mallory", parts[0], parts[1]),
    );
    refused(call(&mallory, add(&alice_pub, own)).await);
    let alices = ssh_sign(
        &alice_key,
        &river_proto::msg::key_proof_message("alice", parts[0], parts[1]),
    );
    refused(call(&mallory, add(&alice_pub, alices.clone())).await);
    // Alice, who holds it, registers it.
    assert!(matches!(call(&alice, add(&alice_pub, alices)).await, Response::UserKeys(k) if k.len() == 1));
    host.shutdown().await;
}

#[tokio::test]
async fn an_address_that_keeps_failing_to_join_is_made_to_wait() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let good = token(&host, 600, 1).await;
    // Guesses at a token: its id and cluster right, the secret not.
    let (head, _) = good.rsplit_once('.').unwrap();
    let (prefix, ca) = (head.rsplit_once('.').unwrap().0, good.rsplit('.').next().unwrap());
    let guess = format!("{prefix}.{}.{ca}", "A".repeat(32));
    for i in 0..5 {
        let e = join(&host, &runner_cfg(d.path(), &format!("guess{i}")), &guess)
            .await
            .unwrap_err();
        assert!(!format!("{e:#}").contains("too many"), "guess {i}: {e:#}");
    }
    // Now even the right token is refused, unread: the address must wait.
    let e = join(&host, &runner_cfg(d.path(), "honest"), &good).await.unwrap_err();
    assert!(format!("{e:#}").contains("too many failed joins"), "{e:#}");
    match call(&admin(&host).await, Request::TokenList).await {
        Response::Tokens(t) => assert_eq!(t[0].uses_left, 1, "the token was spent while refused"),
        other => panic!("{other:?}"),
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_holds_only_so_many_connections_and_others_still_get_in() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let admin = admin(&host).await;
    let invite = match call(
        &admin,
        Request::UserInvite {
            name: "greedy".into(),
            role: river_proto::msg::Role::User,
            ttl_secs: 600,
        },
    )
    .await
    {
        Response::TokenCreated(t) => t.token,
        other => panic!("{other:?}"),
    };
    let bundle = river_mesh::client::enrol(&host.mesh_addr.to_string(), &invite, "greedy", "user")
        .await
        .unwrap();
    // A script gone wrong opens connection after connection and keeps them.
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..300 {
        let (_, conn) = river_mesh::client::connect_bundle(&bundle).await.unwrap();
        match river_mesh::client::call(&conn, &Request::WhoAmI).await {
            Ok(_) => held.push(conn),
            Err(e) => {
                refused = Some((i, format!("{e:#}")));
                break;
            }
        }
    }
    let (at, why) = refused.expect("all 300 connections were let in");
    assert_eq!(at, 256, "{why}");
    assert!(why.contains("connections open"), "{why}");
    // Everyone else is served as before.
    let other = user_conn(&host, &admin, "patient").await;
    assert!(matches!(call(&other, Request::WhoAmI).await, Response::WhoAmI { .. }));
    // Closing some makes room again.
    held.truncate(200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, conn) = river_mesh::client::connect_bundle(&bundle).await.unwrap();
    assert!(matches!(call(&conn, Request::WhoAmI).await, Response::WhoAmI { .. }));
    host.shutdown().await;
}
