//! In-process tests: a real host and real runners over QUIC on loopback. Each test asserts what a
//! user would see: nodes listed, refusals with their reasons, connections that keep working.

#[path = "support/harness.rs"]
mod harness;

use harness::*;
use river_creds::Bundle;
use river_inventory::FakeGpu;
use river_proto::msg::{ErrorKind, NodeState, Request, Response, Role};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_runner_joins_and_reports_its_machine() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let mut cfg = runner_cfg(d.path(), "gpu-01");
    cfg.fake_gpus = vec![FakeGpu {
        name: "Fake H100".into(),
        memory_bytes: 80 << 30,
        numa: Some(0),
    }];
    let bundle = join(&host, &cfg, &token(&host, 600, 1).await).await.unwrap();
    // The private key was made here and never sent; the certificate names the node.
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cfg.state_dir.join("identity/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    assert_eq!(
        bundle.cert_info().unwrap().subject,
        Some(river_pki::Subject::Node("gpu-01".into()))
    );
    let runner = river_runner::start(cfg, bundle);
    eventually(T, "node online with usage", || async {
        nodes(&host)
            .await
            .iter()
            .any(|n| n.name == "gpu-01" && n.state == NodeState::Online && n.usage.is_some())
    })
    .await;
    let n = nodes(&host).await.remove(0);
    assert!(n.info.cores >= 1 && n.info.memory_bytes > 0);
    assert_eq!(n.info.gpus.len(), 1);
    assert_eq!(n.info.gpus[0].name, "Fake H100");
    assert_eq!(n.info.version, env!("CARGO_PKG_VERSION"));
    runner.shutdown().await;
    host.shutdown().await;
}

fn refusal(e: anyhow::Error) -> String {
    format!("{e:#}")
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_next_step() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let other = start_host(host_cfg(&d.path().join("other"))).await;

    // Used up: one use, two joins.
    let one = token(&host, 600, 1).await;
    join(&host, &runner_cfg(d.path(), "a"), &one).await.unwrap();
    let e = refusal(join(&host, &runner_cfg(d.path(), "b"), &one).await.unwrap_err());
    assert!(e.contains("no uses left") && e.contains("river token create"), "{e}");

    // Expired.
    let short = token(&host, 1, 5).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = refusal(join(&host, &runner_cfg(d.path(), "c"), &short).await.unwrap_err());
    assert!(e.contains("expired"), "{e}");

    // Revoked.
    let t = token(&host, 600, 5).await;
    let id = t.split('.').nth(1).unwrap().to_owned();
    assert!(matches!(
        call(&admin(&host).await, Request::TokenRevoke { id }).await,
        Response::Done { .. }
    ));
    let e = refusal(join(&host, &runner_cfg(d.path(), "d"), &t).await.unwrap_err());
    assert!(e.contains("revoked"), "{e}");

    // Forged: a real id with a made-up secret.
    let real = token(&host, 600, 5).await;
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    parts[2] = "A".repeat(parts[2].len());
    let e = refusal(
        join(&host, &runner_cfg(d.path(), "e"), &parts.join("."))
            .await
            .unwrap_err(),
    );
    assert!(e.contains("not known to this host"), "{e}");

    // Another cluster's token: the host's CA does not match the fingerprint, TLS fails.
    let foreign = token(&other, 600, 1).await;
    let e = refusal(join(&host, &runner_cfg(d.path(), "f"), &foreign).await.unwrap_err());
    assert!(e.contains("does not match the fingerprint"), "{e}");

    // Damaged text.
    let e = refusal(join(&host, &runner_cfg(d.path(), "g"), "rvt1.abc").await.unwrap_err());
    assert!(e.contains("damaged"), "{e}");

    // Only the one good join happened, and the refused runners keep no identity.
    assert_eq!(nodes(&host).await.len(), 1);
    assert!(!Bundle::exists(&runner_cfg(d.path(), "b").state_dir.join("identity")));
    host.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn a_taken_name_is_refused_without_spending_the_token() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    join(&host, &runner_cfg(d.path(), "n1"), &token(&host, 600, 1).await)
        .await
        .unwrap();
    let t = token(&host, 600, 1).await;
    let mut dup = runner_cfg(&d.path().join("elsewhere"), "n1");
    dup.name = Some("n1".into());
    let e = refusal(join(&host, &dup, &t).await.unwrap_err());
    assert!(
        e.contains("already in the cluster") && e.contains("river node remove n1"),
        "{e}"
    );
    join(&host, &runner_cfg(d.path(), "n2"), &t)
        .await
        .expect("the token still has its use");
    host.shutdown().await;
}

#[tokio::test]
async fn a_removed_node_is_cut_off_and_cannot_reconnect() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let (cfg, mut runner) = runner(&host, d.path(), "gone").await;
    eventually(T, "node online", || async {
        node_state(&host, "gone").await == Some(NodeState::Online)
    })
    .await;
    let r = call(&admin(&host).await, Request::NodeRemove { name: "gone".into() }).await;
    assert!(matches!(r, Response::Done { .. }), "{r:?}");
    // The runner learns it was removed and stops for good, saying why.
    let stopped = tokio::time::timeout(T, runner.wait()).await.expect("runner stops");
    let why = format!("{:#}", stopped.unwrap_err());
    assert!(why.contains("removed from the cluster"), "{why}");
    // Its old certificate no longer opens a connection.
    let bundle = Bundle::load(&cfg.state_dir.join("identity")).unwrap();
    let (_e, conn) = river_mesh::client::connect_bundle(&bundle).await.unwrap();
    let e = river_mesh::client::call(&conn, &Request::WhoAmI)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("removed from the cluster"), "{e}");
    assert!(node_state(&host, "gone").await.is_none());
    host.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let other = start_host(host_cfg(&d.path().join("other"))).await;
    let foreign = join(&other, &runner_cfg(d.path(), "spy"), &token(&other, 600, 1).await)
        .await
        .unwrap();
    // Trust our host's CA, but present the other cluster's node certificate.
    let mut forged = foreign.clone();
    forged.ca_pem = Bundle::load(&host.admin_dir).unwrap().ca_pem;
    forged.meta.host = host.mesh_addr.to_string();
    let e = match river_mesh::client::connect_bundle(&forged).await {
        Err(e) => e.to_string(),
        Ok((_e, conn)) => river_mesh::client::call(&conn, &Request::WhoAmI)
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(e.to_lowercase().contains("certificate") || e.contains("closed"), "{e}");
    // The host keeps serving everyone else, and lists no such node.
    assert!(nodes(&host).await.is_empty());
    host.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn a_peer_without_a_certificate_may_only_join() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let ca = Bundle::load(&host.admin_dir).unwrap().ca_der().unwrap();
    let endpoint = river_mesh::client_endpoint(host.mesh_addr).unwrap();
    let cfg = river_mesh::client_config(None, river_mesh::Trust::Ca(ca)).unwrap();
    let conn = river_mesh::connect(&endpoint, host.mesh_addr, cfg).await.unwrap();
    let r = river_mesh::client::call(&conn, &Request::NodeList).await;
    assert!(r.is_err(), "an anonymous peer got an answer: {r:?}");
    let reason = conn.closed().await.to_string();
    assert!(reason.contains("may only join"), "{reason}");
    host.shutdown().await;
}

#[tokio::test]
async fn garbage_closes_one_stream_and_the_host_serves_on() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    // Random datagrams at the QUIC port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 1200 + 1)).map(|_| rand::random::<u8>()).collect();
        udp.send_to(&junk, host.mesh_addr).unwrap();
    }
    // Random bytes over TCP at the API port.
    {
        use std::io::Write as _;
        let mut tcp = std::net::TcpStream::connect(host.api_addr).unwrap();
        let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3]);
    }
    let conn = admin(&host).await;
    // A stream with a bad header is reset...
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _ = send.finish();
    assert!(recv.read_to_end(1024).await.is_err() || recv.read_to_end(1024).await.unwrap_or_default().is_empty());
    // ...so is one announcing a 4 GiB frame, and one with a frame that is not a request...
    for body in [u32::MAX.to_be_bytes().to_vec(), vec![0, 0, 0, 3, 0xff, 0xff, 0xff]] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&river_proto::StreamHeader::new(river_proto::StreamKind::Rpc).encode())
            .await
            .unwrap();
        send.write_all(&body).await.unwrap();
        let _ = send.finish();
        let answer = recv.read_to_end(1 << 20).await.unwrap_or_default();
        if !answer.is_empty() {
            let r: Response = river_proto::frame::decode(&answer[4..]).unwrap();
            assert!(
                matches!(
                    r,
                    Response::Error {
                        kind: ErrorKind::Invalid,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
    }
    // ...and the same connection still works.
    assert!(matches!(call(&conn, Request::WhoAmI).await, Response::WhoAmI { .. }));
    host.shutdown().await;
}

#[tokio::test]
async fn runners_come_back_after_a_host_restart() {
    let d = tmp();
    let mut cfg = host_cfg(d.path());
    let host = start_host(cfg.clone()).await;
    cfg.listen = host.mesh_addr;
    let (_c, runner) = runner(&host, d.path(), "r1").await;
    let mut status = runner.status.clone();
    eventually(T, "node online", || async {
        node_state(&host, "r1").await == Some(NodeState::Online)
    })
    .await;
    let fp = host.ca_fingerprint.clone();
    host.shutdown().await;
    tokio::time::timeout(T, status.wait_for(|s| !s.connected))
        .await
        .unwrap()
        .unwrap();
    let host = start_host(cfg).await;
    assert_eq!(host.ca_fingerprint, fp, "same CA after restart");
    tokio::time::timeout(
        Duration::from_secs(40),
        status.wait_for(|s| s.connected && s.sessions >= 2),
    )
    .await
    .expect("runner reconnects by itself")
    .unwrap();
    eventually(T, "node online after restart", || async {
        node_state(&host, "r1").await == Some(NodeState::Online)
    })
    .await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_silent_node_goes_offline_and_returns() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let (cfg, runner) = runner(&host, d.path(), "flaky").await;
    eventually(T, "online", || async {
        node_state(&host, "flaky").await == Some(NodeState::Online)
    })
    .await;
    runner.shutdown().await;
    eventually(T, "offline after missed heartbeats", || async {
        node_state(&host, "flaky").await == Some(NodeState::Offline)
    })
    .await;
    let bundle = river_runner::ensure_joined(&cfg, None)
        .await
        .expect("later starts need no token");
    let runner = river_runner::start(cfg, bundle);
    eventually(T, "online again", || async {
        node_state(&host, "flaky").await == Some(NodeState::Online)
    })
    .await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn renewal_replaces_the_certificate_without_dropping_the_session() {
    let d = tmp();
    let mut cfg = host_cfg(d.path());
    cfg.node_cert_lifetime = Duration::from_secs(12);
    let host = start_host(cfg).await;
    let (rcfg, runner) = runner(&host, d.path(), "renewer").await;
    let first = Bundle::load(&rcfg.state_dir.join("identity"))
        .unwrap()
        .cert_info()
        .unwrap();
    let mut status = runner.status.clone();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.renewals >= 1))
        .await
        .expect("renews")
        .unwrap();
    let s = status.borrow().clone();
    assert_eq!(s.sessions, 1, "the session survived the renewal");
    assert!(s.connected);
    let second = Bundle::load(&rcfg.state_dir.join("identity"))
        .unwrap()
        .cert_info()
        .unwrap();
    assert_ne!(first.serial, second.serial);
    assert!(second.not_after > first.not_after);
    // Past the old certificate's expiry the node is still online, on the same session.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(node_state(&host, "renewer").await, Some(NodeState::Online));
    assert_eq!(status.borrow().sessions, 1);
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn users_join_by_invite_and_roles_are_enforced() {
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let invite = match call(
        &admin(&host).await,
        Request::UserInvite {
            name: "vic".into(),
            role: Role::Viewer,
            ttl_secs: 600,
        },
    )
    .await
    {
        Response::TokenCreated(t) => t.token,
        other => panic!("{other:?}"),
    };
    let vic = river_mesh::client::enrol(&host.mesh_addr.to_string(), &invite, "ignored", "user")
        .await
        .unwrap();
    assert_eq!(
        vic.cert_info().unwrap().subject,
        Some(river_pki::Subject::User("vic".into()))
    );
    let (_e, conn) = river_mesh::client::connect_bundle(&vic).await.unwrap();
    assert!(matches!(call(&conn, Request::NodeList).await, Response::Nodes(_)));
    match call(&conn, Request::TokenCreate { ttl_secs: 60, uses: 1 }).await {
        Response::Error {
            kind: ErrorKind::Forbidden,
            message,
        } => assert!(message.contains("admin role"), "{message}"),
        other => panic!("a viewer created a token: {other:?}"),
    }
    match call(&conn, Request::WhoAmI).await {
        Response::WhoAmI { identity, role } => assert_eq!((identity.as_str(), role), ("user vic", Some(Role::Viewer))),
        other => panic!("{other:?}"),
    }
    // The invite was one-time.
    let e = river_mesh::client::enrol(&host.mesh_addr.to_string(), &invite, "x", "user")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no uses left"), "{e}");
    host.shutdown().await;
}

#[tokio::test]
async fn state_survives_a_host_restart() {
    let d = tmp();
    let cfg = host_cfg(d.path());
    let host = start_host(cfg.clone()).await;
    join(&host, &runner_cfg(d.path(), "keep"), &token(&host, 600, 1).await)
        .await
        .unwrap();
    let spare = token(&host, 600, 3).await;
    host.shutdown().await;
    let host = start_host(cfg).await;
    assert_eq!(nodes(&host).await.len(), 1, "node kept");
    join(&host, &runner_cfg(d.path(), "later"), &spare)
        .await
        .expect("token kept");
    host.shutdown().await;
}

/// `curl` against the host's HTTPS API, as a script would use it. Returns (status, body).
fn curl(host: &river_host::RunningHost, cert: bool, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let dir = &host.admin_dir;
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(["-X", method]);
    if cert {
        c.arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"));
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", b]);
    }
    c.arg(format!("https://localhost:{}{path}", host.api_addr.port()));
    let out = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_api_serves_nodes_and_tasks_to_certificate_holders() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "curl is required in CI");
        eprintln!("skipped: no curl");
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let h = &host;
    let (code, body) = tokio::task::block_in_place(|| curl(h, false, "GET", "/api/health", None));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ok\""));
    let (code, body) = tokio::task::block_in_place(|| curl(h, false, "GET", "/api/nodes", None));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("river user certificate"));
    let (code, body) = tokio::task::block_in_place(|| curl(h, true, "GET", "/api/nodes", None));
    assert_eq!((code, body.as_str()), (200, "[]"));
    // No node could run it: refused with the reason.
    let spec = r#"{"command": ["true"], "image": "img", "cores": 4}"#;
    let (code, body) = tokio::task::block_in_place(|| curl(h, true, "POST", "/api/tasks", Some(spec)));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no nodes yet"), "{body}");
    // With a node that has not reported yet, the task queues; it can be read back and cancelled.
    join(&host, &runner_cfg(d.path(), "later"), &token(&host, 600, 1).await)
        .await
        .unwrap();
    let (code, body) = tokio::task::block_in_place(|| curl(h, true, "POST", "/api/tasks", Some(spec)));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["ids"][0].as_u64().unwrap();
    let (code, body) = tokio::task::block_in_place(|| curl(h, true, "GET", &format!("/api/tasks/{id}"), None));
    assert_eq!(code, 200);
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (t["state"].as_str(), t["spec"]["cores"].as_u64()),
        (Some("queued"), Some(4))
    );
    let (code, _) = tokio::task::block_in_place(|| curl(h, true, "POST", &format!("/api/tasks/{id}/kill"), None));
    assert_eq!(code, 200);
    let (_, body) = tokio::task::block_in_place(|| curl(h, true, "GET", "/api/tasks?state=killed", None));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (code, _) = tokio::task::block_in_place(|| curl(h, true, "GET", "/api/tasks/999", None));
    assert_eq!(code, 404);
    host.shutdown().await;
}
