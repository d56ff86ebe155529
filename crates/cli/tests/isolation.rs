//! Tenant isolation, tried as an attacker would: a plain `user` with nothing but the API the CLI
//! uses, against the real runner, the node's real cgroups and the real Docker engine. Each test
//! carries out an attack that worked before the fix and asserts it no longer does. They need root
//! (process tasks change uid); without it they say they are skipped, and under
//! `RIVER_REQUIRE_DOCKER=1` (the README's test command, as root) they fail.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_proto::msg::TaskSpec;
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

async fn ready() -> bool {
    root("process tasks change uid only under a root runner") && docker_ready().await
}

/// Lets tasks' users reach the runners' scratch directories, as under `/var/lib` (a temporary
/// directory is its creator's alone).
fn open_up(d: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn process(script: &str) -> TaskSpec {
    let mut s = TaskSpec::new("", vec!["sh".into(), "-c".into(), script.into()]);
    s.no_container = true;
    s
}

/// Runs `s` to its end as `conn`'s user and returns its output (stdout, then stderr).
async fn run(conn: &river_mesh::Connection, s: TaskSpec) -> (String, String) {
    let id = submit(conn, s).await[0];
    let t = wait_state(conn, id, &["completed", "failed", "killed", "oom"]).await;
    let out = (logs(conn, id, false).await, logs(conn, id, true).await);
    assert_eq!(t.state, "completed", "task {id}: {t:?} {out:?}");
    out
}

/// A C program compiled on the node, in `dir`, by one of the user's own process tasks.
fn compile(c: &str, dir: &str, out: &str) -> String {
    format!("printf '%s' '{c}' > {dir}/src.c && cc -o {out} {dir}/src.c")
}

#[tokio::test]
async fn a_users_variables_never_reach_what_runs_as_root() {
    if !ready().await {
        return;
    }
    let d = tmp();
    open_up(d.path());
    let (host, runner, admin) = cluster(d.path(), "iso1").await;
    let mallory = user_conn(&host, &admin, "mallory").await;

    // Programs named like everything a start might look up on PATH, each noting who ran it, and
    // a library that does the same when preloaded; in /tmp, which every user may write.
    let dir = format!("/tmp/river-iso-{}", rand::random::<u32>());
    let plant = format!(
        "mkdir -p {dir}/bin; for n in setpriv sh env mkdir echo id cat nice; do \
           real=$(command -v $n) || continue; \
           printf '#!/bin/sh\\n%s -u >> {dir}/ran\\nexec %s \"$@\"\\n' \"$(command -v id)\" \"$real\" > {dir}/bin/$n; \
           chmod 755 {dir}/bin/$n; \
         done; chmod 777 {dir}; {}",
        compile(
            "#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void f(void) { FILE *o = fopen(OUT, \"a\"); if (o) { fprintf(o, \"%d\\n\", (int)geteuid()); fclose(o); } }\n",
            &dir,
            &format!("{dir}/evil.so -shared -fPIC -DOUT='\"{dir}/ran\"'")
        )
    );
    let (_, err) = run(&mallory, process(&plant)).await;
    let home = dir.clone();
    assert!(std::path::Path::new(&home).join("evil.so").exists(), "planted: {err}");

    let mut s = process("id -u");
    s.env = vec![
        ("PATH".into(), format!("{home}/bin:/usr/sbin:/usr/bin:/sbin:/bin")),
        ("LD_PRELOAD".into(), format!("{home}/evil.so")),
    ]
    .into();
    let (uid, _) = run(&mallory, s).await;
    assert_ne!(uid.trim(), "0", "the task itself runs as its user");
    let ran = std::fs::read_to_string(format!("{home}/ran")).unwrap_or_default();
    assert!(
        !ran.lines().any(|l| l == "0"),
        "something mallory planted ran as root: {ran:?}"
    );
    assert!(
        ran.lines().any(|l| l == uid.trim()),
        "the planted programs did run, as mallory: {ran:?}"
    );
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn users_cannot_read_or_signal_each_others_processes() {
    if !ready().await {
        return;
    }
    let d = tmp();
    open_up(d.path());
    let (host, runner, admin) = cluster(d.path(), "iso2").await;
    let ann = user_conn(&host, &admin, "ann").await;
    let bob = user_conn(&host, &admin, "bob").await;

    // Ann's task sleeps five minutes at most, even if this test fails before it kills it.
    let tail = 100_000 + rand::random::<u32>() % 900_000;
    let marker = format!("300.{tail}");
    let secret = format!("hunter2-{marker}");
    let mut s = process(&format!(
        "echo notes-{marker} > \"$HOME/notes\"; echo \"$HOME\"; sleep {marker}"
    ));
    s.env = vec![("PASSWORD".into(), secret.clone())].into();
    let victim = submit(&ann, s).await[0];
    wait_state(&ann, victim, &["running"]).await;
    eventually(Duration::from_secs(10), "ann's task says where it works", || async {
        !logs(&ann, victim, false).await.trim().is_empty()
    })
    .await;
    let home = logs(&ann, victim, false).await.trim().to_owned();

    // The marker is spelt so that this script's own command line does not contain it.
    let attack = format!(
        "m=300.$(({tail} + 0)); for p in /proc/[0-9]*; do \
           if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q \"sleep $m\"; then \
             echo found $p; tr '\\0' '\\n' < $p/environ; kill -9 ${{p#/proc/}}; \
           fi; \
         done; cat {home}/notes; true"
    );
    let (out, err) = run(&bob, process(&attack)).await;
    assert!(out.contains("found /proc/"), "bob saw ann's process: {out} {err}");
    assert!(!out.contains(&secret), "bob read ann's environment: {out}");
    assert!(!out.contains(&format!("notes-{marker}")), "bob read ann's files: {out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        show(&ann, victim).await.state,
        "running",
        "bob killed ann's task: {err}"
    );
    let ann_uid = std::fs::metadata(&home).unwrap().uid();
    let (bob_uid, _) = run(&bob, process("id -u")).await;
    assert_ne!(ann_uid.to_string(), bob_uid.trim(), "a uid each");
    assert_ne!(ann_uid, 0);
    signal(&ann, victim, river_proto::msg::Signal::Kill).await;
    wait_state(&ann, victim, &["killed"]).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_setuid_binary_planted_by_a_container_gives_no_root() {
    if !ready().await {
        return;
    }
    let d = tmp();
    open_up(d.path());
    let (host, runner, admin) = cluster(d.path(), "iso3").await;
    let mallory = user_conn(&host, &admin, "mallory").await;

    // Compiled by mallory's process task in its working directory, which her containers see
    // under /local_temp; her container (root inside, the node's root outside) makes it setuid
    // root; her next process task runs it from its own working directory's sibling.
    let program = "#include <stdio.h>\n#include <unistd.h>\nint main(void) { if (setuid(0) != 0) {} printf(\"euid=%d\\n\", (int)geteuid()); return 0; }\n";
    let id = submit(&mallory, process(&format!("{} && pwd", compile(program, ".", "x")))).await[0];
    let t = wait_state(&mallory, id, &["completed", "failed"]).await;
    let home = logs(&mallory, id, false).await.trim().to_owned();
    assert_eq!(t.state, "completed", "{t:?} {}", logs(&mallory, id, true).await);
    let (out, _) = run(
        &mallory,
        spec(&format!(
            "chown 0:0 /local_temp/task-{id}/x && chmod 4755 /local_temp/task-{id}/x && ls -ln /local_temp/task-{id}/x"
        )),
    )
    .await;
    assert!(
        out.starts_with("-rwsr-xr-x"),
        "the container made it setuid root: {out}"
    );

    let (out, _) = run(&mallory, process(&format!("../task-{id}/x"))).await;
    assert!(out.starts_with("euid="), "{out}");
    assert_ne!(out.trim(), "euid=0", "a process task became root");
    // The same person logged in to the node, outside river: the scratch is nosuid.
    let uid = std::fs::metadata(&home).unwrap().uid().to_string();
    let login = std::process::Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
        .arg(format!("{home}/x"))
        .output()
        .unwrap();
    let login = String::from_utf8_lossy(&login.stdout);
    assert!(login.starts_with("euid="), "{login}");
    assert_ne!(login.trim(), "euid=0", "a login on the node became root");
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn containers_of_different_users_cannot_reach_each_other() {
    if !ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, admin) = cluster(d.path(), "iso4").await;
    let ann = user_conn(&host, &admin, "ann").await;
    let bob = user_conn(&host, &admin, "bob").await;

    let secret = format!("ann-{}", rand::random::<u32>());
    let service = submit(
        &ann,
        spec(&format!(
            "hostname -i; mkdir /tmp/www; echo {secret} > /tmp/www/index.html; httpd -f -p 8080 -h /tmp/www"
        )),
    )
    .await[0];
    wait_state(&ann, service, &["running"]).await;
    eventually(Duration::from_secs(10), "ann's service says its address", || async {
        !logs(&ann, service, false).await.trim().is_empty()
    })
    .await;
    let ip = logs(&ann, service, false).await.trim().to_owned();
    // The service is up: the node itself reaches it.
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().expect("an IPv4 address");
    eventually(Duration::from_secs(10), "ann's service answers the node", || async {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })
    .await;

    let (out, _) = run(
        &bob,
        spec(&format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080 || echo unreachable"
        )),
    )
    .await;
    assert!(!out.contains(&secret), "bob's container fetched ann's service: {out}");
    assert!(out.contains("unreachable"), "{out}");
    signal(&ann, service, river_proto::msg::Signal::Kill).await;
    wait_state(&ann, service, &["killed"]).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_mount_source_swapped_for_a_link_never_mounts_the_node() {
    if !ready().await {
        return;
    }
    let d = tmp();
    open_up(d.path());
    let (host, runner, admin) = cluster(d.path(), "iso5").await;
    let mallory = user_conn(&host, &admin, "mallory").await;

    // Mallory's process task swaps a directory and a link to the node's / in her scratch
    // directory, atomically, for two minutes at most, while her containers ask to mount the
    // directory.
    let swap = "#define _GNU_SOURCE\n#include <stdio.h>\n#include <fcntl.h>\n#include <time.h>\nint main(void) { time_t end = time(0) + 120; while (time(0) < end) renameat2(AT_FDCWD, \"d\", AT_FDCWD, \"l\", RENAME_EXCHANGE); return 0; }\n";
    let swapper = submit(
        &mallory,
        process(&format!(
            "{} && mkdir d && touch d/mine && ln -s / l && pwd && exec ./swap",
            compile(swap, ".", "swap")
        )),
    )
    .await[0];
    eventually(
        Duration::from_secs(60),
        "the swapping task says where it works",
        || async { !logs(&mallory, swapper, false).await.trim().is_empty() },
    )
    .await;
    let work = logs(&mallory, swapper, false).await.trim().to_owned();
    assert_eq!(show(&mallory, swapper).await.state, "running");

    let tries: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..30 {
            let s = TaskSpec {
                mounts: vec![river_proto::msg::MountSpec {
                    source: format!("{work}/d"),
                    target: "/x".into(),
                    read_only: true,
                }],
                ..spec("ls /x")
            };
            ids.push(submit(&mallory, s).await[0]);
        }
        ids
    };
    let (mut mounted, mut node, mut refused) = (0, Vec::new(), Vec::new());
    for id in tries {
        let t = wait_state(&mallory, id, &["completed", "failed"]).await;
        let out = logs(&mallory, id, false).await;
        if out.lines().any(|l| l == "etc" || l == "proc") {
            node.push(id);
        } else if t.state == "completed" && out.trim() == "mine" {
            mounted += 1;
        } else {
            refused.push((id, t.message.unwrap_or_default(), out));
        }
    }
    assert!(node.is_empty(), "tasks {node:?} mounted the node's root filesystem");
    assert!(mounted > 0, "no try mounted the directory itself");
    for (id, why, out) in refused {
        assert!(why.contains("symbolic link"), "task {id} failed otherwise: {why} {out}");
    }
    signal(&mallory, swapper, river_proto::msg::Signal::Kill).await;
    wait_state(&mallory, swapper, &["killed"]).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn another_users_vps_snapshot_cannot_be_run_by_its_image() {
    if !ready().await {
        return;
    }
    use river_proto::msg::{Request, Response};
    let d = tmp();
    let (host, runner, admin) = cluster(d.path(), "iso6").await;
    let ann = user_conn(&host, &admin, "ann").await;
    let bob = user_conn(&host, &admin, "bob").await;

    // Ann's VPS holds a secret; she snapshots it, then restores it, so the snapshot's image is
    // on the node (her VPS's container runs it).
    let mut vps = TaskSpec::new(IMAGE, Vec::new());
    vps.vps = Some(river_proto::msg::VpsSpec {
        ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPApQ0j57M7iGP/Usn4Gpx9FDHOqJCvgdjD3+Zj7Rpga ann".into()],
        image_sshd: false,
        generation: 0,
    });
    let id = submit(&ann, vps).await[0];
    let t = wait_state(&ann, id, &["running"]).await;
    let ca8 = match call(&admin, Request::Status).await {
        Response::Status(s) => s.ca_fingerprint[..8].to_owned(),
        other => panic!("status: {other:?}"),
    };
    let container = format!("river-{ca8}-{}-task-{id}", t.placement.unwrap().node);
    let secret = format!("ann-secret-{}", rand::random::<u32>());
    let o = std::process::Command::new("docker")
        .args(["exec", &container, "sh", "-c", &format!("echo {secret} > /root/secret")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let snapshot = match call(&ann, Request::VpsSnapshot { id, message: None }).await {
        Response::Snapshot(s) => *s,
        other => panic!("snapshot: {other:?}"),
    };
    signal(&ann, id, river_proto::msg::Signal::Stop).await;
    wait_state(&ann, id, &["stopped"]).await;
    match call(&ann, Request::VpsRestore { id, seq: snapshot.seq }).await {
        Response::Done { .. } => {}
        other => panic!("restore: {other:?}"),
    }
    wait_state(&ann, id, &["running"]).await;

    // Bob is not shown the image of Ann's VPS…
    let seen = show(&bob, id).await;
    assert!(
        seen.assigned.archive.is_none() && seen.spec.image.is_empty(),
        "bob sees ann's VPS image: {:?} {:?}",
        seen.spec,
        seen.assigned
    );
    // …and, knowing its id all the same, may not run it.
    let image = snapshot.archive.image_id.clone();
    let steal = submit(
        &bob,
        TaskSpec {
            image: image.clone(),
            ..spec("cat /root/secret")
        },
    )
    .await[0];
    let t = wait_state(&bob, steal, &["completed", "failed"]).await;
    let out = logs(&bob, steal, false).await;
    assert!(!out.contains(&secret), "bob read ann's VPS disk: {out}");
    assert_eq!(t.state, "failed", "{t:?}");
    assert!(
        t.message.unwrap_or_default().contains("another user's VPS"),
        "the refusal says why"
    );
    // Ann herself, and operators, still may.
    for (who, conn) in [("ann", &ann), ("the admin", &admin)] {
        let (out, _) = run(
            conn,
            TaskSpec {
                image: image.clone(),
                ..spec("cat /root/secret")
            },
        )
        .await;
        assert_eq!(out.trim(), secret, "{who} runs the snapshot");
    }
    match call(&ann, Request::VpsRemove { id }).await {
        Response::Done { .. } => {}
        other => panic!("remove: {other:?}"),
    }
    runner.shutdown().await;
    host.shutdown().await;
}
