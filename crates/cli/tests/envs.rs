//! Container environments and terminals, in process against the real Docker engine: an
//! environment made on a node, edited through a terminal, committed, and fetched over the mesh by
//! a node whose engine lacks it.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_mesh::{recv_msg, send_msg};
use river_proto::msg::{EnvView, Request, Response, TaskSpec, TermIn, TermOut, TerminalOpen};
use river_proto::StreamKind;
use std::time::Duration;

async fn env(conn: &river_mesh::Connection, req: Request) -> EnvView {
    match call(conn, req).await {
        Response::Env(e) => *e,
        other => panic!("env call: {other:?}"),
    }
}

async fn refused(conn: &river_mesh::Connection, req: Request) -> String {
    match call(conn, req).await {
        Response::Error { message, .. } => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// What a terminal session printed and how it ended.
#[derive(Debug, Default)]
struct Session {
    stdout: String,
    stderr: String,
    code: Option<i64>,
    error: Option<String>,
}

/// Runs `command` in task `task` through a `Terminal` stream, feeding it `input` then EOF.
async fn terminal(conn: &river_mesh::Connection, task: u64, command: &[&str], input: &[u8], tty: bool) -> Session {
    let (mut send, mut recv) = river_mesh::open(conn, StreamKind::Terminal).await.unwrap();
    let open = TerminalOpen {
        task,
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        tty,
        rows: 33,
        cols: 101,
    };
    send_msg(&mut send, &open).await.unwrap();
    let mut s = Session::default();
    match recv_msg::<TermOut>(&mut recv).await.unwrap() {
        Some(TermOut::Started) => {}
        Some(TermOut::Error(e)) => {
            s.error = Some(e);
            return s;
        }
        other => panic!("first frame: {other:?}"),
    }
    if !input.is_empty() {
        send_msg(&mut send, &TermIn::Input(input.to_vec())).await.unwrap();
    }
    send_msg(&mut send, &TermIn::Eof).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), recv_msg::<TermOut>(&mut recv))
            .await
            .expect("terminal answers")
            .unwrap()
        {
            Some(TermOut::Stdout(b)) => s.stdout.push_str(&String::from_utf8_lossy(&b)),
            Some(TermOut::Stderr(b)) => s.stderr.push_str(&String::from_utf8_lossy(&b)),
            Some(TermOut::Exit { code }) => s.code = Some(code),
            Some(TermOut::Error(e)) => s.error = Some(e),
            Some(TermOut::Started) => {}
            None => return s,
        }
    }
}

#[tokio::test]
async fn terminals_run_commands_in_a_task_and_refuse_what_they_must() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "t1").await;
    let id = submit(&conn, spec("sleep 600")).await[0];
    wait_state(&conn, id, &["running"]).await;

    // Input reaches the command, stdout and stderr stay apart, the exit code comes back.
    let s = terminal(
        &conn,
        id,
        &["sh", "-c", "read x; echo got $x; echo oops >&2; exit 7"],
        b"hello\n",
        false,
    )
    .await;
    assert_eq!(
        (s.stdout.as_str(), s.stderr.as_str(), s.code),
        ("got hello\n", "oops\n", Some(7))
    );
    // A pseudo-terminal of the size asked for (set just after the command starts, as Docker's own
    // CLI does: Docker 20.10 cannot create an exec with a size).
    let s = terminal(&conn, id, &["sh", "-c", "sleep 0.5; stty size"], b"", true).await;
    assert_eq!((s.stdout.trim(), s.code), ("33 101", Some(0)), "{s:?}");
    // Large output arrives whole.
    let s = terminal(
        &conn,
        id,
        &["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"],
        b"",
        false,
    )
    .await;
    assert_eq!((s.stdout.len(), s.code), (3_000_000, Some(0)));

    // Another user may not reach the task; a finished or unknown task is refused with the reason.
    let other = user_conn(&host, &conn, "mallory").await;
    let s = terminal(&other, id, &["true"], b"", false).await;
    assert!(s.error.as_deref().unwrap().contains("belongs to"), "{s:?}");
    let s = terminal(&conn, 9999, &["true"], b"", false).await;
    assert!(s.error.as_deref().unwrap().contains("no task 9999"), "{s:?}");
    signal(&conn, id, river_proto::msg::Signal::Kill).await;
    wait_state(&conn, id, &["killed"]).await;
    let s = terminal(&conn, id, &["true"], b"", false).await;
    assert!(s.error.as_deref().unwrap().contains("is killed"), "{s:?}");
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn an_environment_is_edited_committed_and_fetched_over_the_mesh_once() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "e1").await;
    let name = format!("tools{}", rand::random::<u32>());

    // Made from an image the node has; kept by the host as a checksummed archive.
    let e = env(
        &conn,
        Request::EnvCreate {
            name: name.clone(),
            from: IMAGE.into(),
            node: None,
        },
    )
    .await;
    let v1 = e.versions[0].archive.clone().expect("an archive");
    assert!(v1.size > 100_000, "{v1:?}");
    let stored = std::fs::read(d.path().join("host/blobs").join(&v1.digest)).unwrap();
    assert_eq!(hex_sha256(&stored), v1.digest);
    assert!(refused(
        &conn,
        Request::EnvCreate {
            name: name.clone(),
            from: IMAGE.into(),
            node: None
        }
    )
    .await
    .contains("already exists"));
    assert!(refused(
        &conn,
        Request::EnvCreate {
            name: "Bad Name".into(),
            from: IMAGE.into(),
            node: None
        }
    )
    .await
    .contains("invalid environment name"));
    assert!(refused(
        &conn,
        Request::EnvCreate {
            name: "nothere".into(),
            from: "river-test/none:0".into(),
            node: None
        }
    )
    .await
    .contains("could not save image river-test/none:0"));

    // Edit it in its editing container, then commit: a new version with the change.
    let task = match call(
        &conn,
        Request::EnvShell {
            name: name.clone(),
            node: None,
        },
    )
    .await
    {
        Response::EnvSession { task, started: true } => task,
        other => panic!("env shell: {other:?}"),
    };
    wait_state(&conn, task, &["running"]).await;
    let s = terminal(&conn, task, &["sh", "-c", "echo edited > /marker"], b"", false).await;
    assert_eq!(s.code, Some(0), "{s:?}");
    let e = env(
        &conn,
        Request::EnvCommit {
            name: name.clone(),
            message: Some("add marker".into()),
        },
    )
    .await;
    assert_eq!(e.versions.len(), 2);
    let v2 = e.versions[1].archive.clone().expect("an archive");
    assert_ne!(v2.image_id, v1.image_id);
    assert_eq!(e.versions[1].message.as_deref(), Some("add marker"));
    let t = wait_state(&conn, task, &["killed"]).await;
    // Its end says what became of it, not a bare `killed 137`.
    assert_eq!(
        t.message.as_deref(),
        Some(format!("saved as {name} v2; its editing container was stopped").as_str()),
        "{t:?}"
    );

    // The node's engine loses the image: three tasks at once need it, and it is fetched once.
    let rt = river_docker::Runtime::connect(None).await.unwrap();
    rt.remove_image(&v2.image_id).await.unwrap();
    assert!(!rt.image_present(&v2.image_id).await.unwrap());
    let mut s = TaskSpec::new("", vec!["cat".into(), "/marker".into()]);
    s.environment = Some(name.clone());
    let ids: Vec<u64> = [
        submit(&conn, s.clone()).await,
        submit(&conn, s.clone()).await,
        submit(&conn, s.clone()).await,
    ]
    .concat();
    for id in &ids {
        let t = wait_state(&conn, *id, &["completed", "failed"]).await;
        assert_eq!(t.state, "completed", "{t:?}");
        assert_eq!(logs(&conn, *id, false).await, "edited\n");
        assert_eq!(t.spec.environment.as_deref(), Some(format!("{name}:v2").as_str()));
    }
    let fetches = |e: &EnvView| e.versions[1].fetches;
    let listed = |conn| async move {
        match call(conn, Request::EnvList).await {
            Response::Envs(envs) => envs,
            other => panic!("env list: {other:?}"),
        }
    };
    let now = listed(&conn).await.into_iter().find(|e| e.name == name).unwrap();
    assert_eq!(fetches(&now), 1, "one fetch for three tasks");

    // A corrupt partial download is detected by its checksum, thrown away and fetched again.
    rt.remove_image(&v2.image_id).await.unwrap();
    let blobs = d.path().join("runner-e1/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{}.partial", v2.digest)), vec![0x55u8; 4096]).unwrap();
    let id = submit(&conn, s.clone()).await[0];
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!(
        (t.state.as_str(), logs(&conn, id, false).await.as_str()),
        ("completed", "edited\n"),
        "{t:?}"
    );
    let now = listed(&conn).await.into_iter().find(|e| e.name == name).unwrap();
    assert_eq!(fetches(&now), 3, "the resumed, corrupt fetch and the full one");

    // An older version by number; unknown ones are refused at submit.
    let mut old = s.clone();
    old.environment = Some(format!("{name}:v1"));
    old.command = vec!["sh".into(), "-c".into(), "test -e /marker; echo $?".into()];
    let id = submit(&conn, old).await[0];
    wait_state(&conn, id, &["completed"]).await;
    assert_eq!(logs(&conn, id, false).await, "1\n");
    let mut bad = s.clone();
    bad.environment = Some(format!("{name}:v9"));
    assert!(refused(&conn, Request::TaskSubmit(bad)).await.contains("no version"));
    let mut both = s.clone();
    both.image = IMAGE.into();
    assert!(refused(&conn, Request::TaskSubmit(both)).await.contains("not both"));

    // The default environment exists out of the box and runs a task that names nothing.
    let id = submit(&conn, TaskSpec::new("", vec!["echo".into(), "plain".into()])).await[0];
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!(
        (t.state.as_str(), t.spec.environment.as_deref()),
        ("completed", Some("default:v1"))
    );

    // Removal deletes the archives no other version uses; the default cannot go.
    assert!(refused(&conn, Request::EnvRm { name: "default".into() })
        .await
        .contains("cannot be removed"));
    match call(&conn, Request::EnvRm { name: name.clone() }).await {
        Response::Done { .. } => {}
        other => panic!("env rm: {other:?}"),
    }
    assert!(!d.path().join("host/blobs").join(&v2.digest).exists());
    // The node that loaded the version's image from the host removes it too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rt.image_present(&v2.image_id).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed environment's image stayed on the node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.shutdown().await;
    host.shutdown().await;
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn only_an_environments_owner_or_an_operator_changes_it_and_the_default_is_the_clusters() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, admin) = cluster(d.path(), "e3").await;
    let alice = user_conn(&host, &admin, "alice").await;
    let mallory = user_conn(&host, &admin, "mallory").await;
    let name = format!("alice{}", rand::random::<u32>());
    env(
        &alice,
        Request::EnvCreate {
            name: name.clone(),
            from: IMAGE.into(),
            node: None,
        },
    )
    .await;

    // Mallory would publish her own version of alice's environment, or of the default everyone
    // runs: no editing container, no commit, no removal.
    for target in [name.as_str(), "default"] {
        for req in [
            Request::EnvShell {
                name: target.into(),
                node: None,
            },
            Request::EnvCommit {
                name: target.into(),
                message: None,
            },
            Request::EnvRm { name: target.into() },
        ] {
            let why = refused(&mallory, req.clone()).await;
            assert!(
                why.contains("may change it") || why.contains("cannot be removed"),
                "{req:?}: {why}"
            );
        }
    }
    let why = refused(
        &alice,
        Request::EnvShell {
            name: "default".into(),
            node: None,
        },
    )
    .await;
    assert!(why.contains("only operators may change it"), "{why}");

    // Its owner edits it; an operator (here the admin) may edit the default.
    for (who, target) in [(&alice, name.as_str()), (&admin, "default")] {
        match call(
            who,
            Request::EnvShell {
                name: target.into(),
                node: None,
            },
        )
        .await
        {
            Response::EnvSession { task, .. } => {
                let killed = call(
                    who,
                    Request::TaskSignal {
                        id: task,
                        signal: river_proto::msg::Signal::Kill,
                    },
                )
                .await;
                assert!(!matches!(killed, Response::Error { .. }), "{killed:?}");
            }
            other => panic!("{target}: {other:?}"),
        }
    }
    runner.shutdown().await;
    host.shutdown().await;
}
