//! People on a shared cluster, tried as an attacker would with nothing but the `river` binary: an
//! operator inviting an existing account's name, a viewer reading another user's secrets, a
//! re-enrolled user's old laptop. Real `river host` (and runner) processes.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A `river connect` session into task `id` as the user of `cfg`, open once it has printed.
fn terminal_in(cfg: &Path, id: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_river"))
        .args(["connect", id, "--", "sh", "-c", "echo ready; exec sleep 300"])
        .env("RIVER_CONFIG_DIR", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "ready");
    child
}

#[test]
fn an_invite_never_takes_over_an_existing_account() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let opal = person(d.path(), &admin, &listen, "opal", "operator");

    // The operator may invite users, but not into the admin's account: before, the store kept the
    // existing role, and the invite's holder logged in as `user admin (admin)`.
    let o = river(&opal, &["user", "invite", "admin", "--role", "user"]);
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "an operator got an invite into the admin's account: {out}"
    );
    assert!(
        err.contains("exists already") && err.contains("river user reissue admin"),
        "{err}"
    );
    // Nor into anyone else's, whatever the role asked for; and an admin neither.
    let vic = person(d.path(), &admin, &listen, "vic", "viewer");
    for (by, role) in [(&opal, "viewer"), (&admin, "operator")] {
        let o = river(by, &["user", "invite", "vic", "--role", role]);
        assert!(!o.status.success(), "an invite into vic's account: {:?}", text(&o));
    }
    let (who, _) = text(&river(&vic, &["whoami"]));
    assert!(who.contains("vic") && who.contains("viewer"), "{who}");
    // New people are invited as before.
    person(d.path(), &opal, &listen, "newbie", "user");
    // Only an admin re-enrols someone.
    let o = river(&opal, &["user", "reissue", "vic"]);
    assert!(
        !o.status.success() && text(&o).1.contains("admin role"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn a_tasks_variables_are_shown_to_its_owner_and_operators_only_and_never_logged() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let runner = runner_process(d.path(), &admin, &listen, "n1");
    // It joined with its token from a file: nothing secret on its command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", runner.0.id())).unwrap();
    let token = std::fs::read_to_string(d.path().join("token-n1")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.contains("--token-file") && !cmdline.contains(token.trim()),
        "{cmdline}"
    );
    let alice = person(d.path(), &admin, &listen, "alice", "user");
    let vic = person(d.path(), &admin, &listen, "vic", "viewer");
    let secret = "hunter2-7f3a9c";
    let env = format!("PASSWORD={secret}");
    let id = running_task(&alice, &["--no-container", "-e", &env, "--", "sleep", "600"]);

    for args in [
        vec!["task", "status", &id, "-o", "json"],
        vec!["task", "list", "-o", "json"],
    ] {
        let o = river(&vic, &args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(
            out.contains(&format!("\"id\": {id}")) || out.contains(&format!("\"id\":{id}")),
            "{out}"
        );
        assert!(
            !out.contains(secret),
            "a viewer read alice's password with {args:?}: {out}"
        );
    }
    for who in [&alice, &admin] {
        let (out, _) = text(&river(who, &["task", "status", &id, "-o", "json"]));
        assert!(out.contains(secret), "the owner and operators see the variables: {out}");
    }
    // A refused request is logged by its kind, not its contents.
    let o = river(&vic, &["task", "submit", "-e", &env, "--", "true"]);
    assert!(!o.status.success(), "a viewer submitted a task");
    let log = d.path().join("host.log");
    until(Duration::from_secs(10), "the refusal is logged", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("refused"))
    });
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("TaskSubmit"), "{log}");
    assert!(!log.contains(secret), "the host logged the password:\n{log}");
    assert!(river(&alice, &["task", "kill", &id]).status.success());
}

#[test]
fn a_reissued_user_logs_in_again_and_the_old_laptop_is_cut_off_at_once() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let laptop = person(d.path(), &admin, &listen, "ann", "user");
    let id = running_task(&laptop, &["--image", "river-test/busybox:1", "--", "sleep", "600"]);

    // The old laptop has a session open in her task.
    let mut open = terminal_in(&laptop, &id);

    // The admin re-enrols her; she logs in on a new machine.
    let o = river(&admin, &["user", "reissue", "ann", "--ttl", "10m"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let token = text(&o).0.trim().to_owned();
    assert!(text(&river(&admin, &["token", "list"])).0.contains("reissue ann"));
    let new = login(d.path(), &listen, "ann-new", &token);
    let reissued = Instant::now();

    // What the old certificate had open is closed, and it gets no further.
    let ended = loop {
        if let Some(status) = open.try_wait().unwrap() {
            break status;
        }
        assert!(
            reissued.elapsed() < Duration::from_secs(5),
            "the old laptop's session is still open after the reissue"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("old session closed {:?} after the login", reissued.elapsed());
    assert!(!ended.success(), "the cut session ended as if it had finished");
    let o = river(&laptop, &["whoami"]);
    assert!(!o.status.success(), "the old certificate still works: {:?}", text(&o));
    assert!(text(&o).1.contains("revoked"), "{:?}", text(&o));

    // The new one is the same user, with her role and her task.
    let (who, _) = text(&river(&new, &["whoami"]));
    assert!(who.contains("ann") && who.contains("(user)"), "{who}");
    let (list, _) = text(&river(&new, &["task", "list"]));
    assert!(list.contains(&id), "{list}");
    let o = river(&new, &["task", "kill", &id]);
    assert!(o.status.success(), "{:?}", text(&o));
    // A reissue token is one-time, like an invite.
    let o = river(&d.path().join("thief"), &["login", &listen, "--token", &token]);
    assert!(!o.status.success(), "a used reissue token worked again");

    // Logging out revokes the certificate, not only the files: a copy made before is dead too.
    let copy = d.path().join("ann-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["ca.crt", "cert.pem", "key.pem", "cluster.toml"] {
        std::fs::copy(new.join(f), copy.join(f)).unwrap();
    }
    let o = river(&new, &["logout"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!new.join("key.pem").exists());
    let o = river(&copy, &["whoami"]);
    assert!(!o.status.success() && text(&o).1.contains("revoked"), "{:?}", text(&o));
}

/// A passphrase-less ed25519 key at `path` (and `path.pub`).
fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "people-test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {o:?}");
}

/// Waits up to 5 s for `child` to end; how long it took.
fn ends_within(child: &mut std::process::Child, since: Instant, what: &str) -> Duration {
    loop {
        if child.try_wait().unwrap().is_some() {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(5), "{what} is still open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_removed_user_is_cut_off_everywhere_at_once_and_managers_stay_within_their_role() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let opal = person(d.path(), &admin, &listen, "opal", "operator");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let vic = person(d.path(), &admin, &listen, "vic", "user");
    let id = running_task(&bob, &["--image", "river-test/busybox:1", "--", "sleep", "600"]);

    // Bob has a terminal open in his task and a session on the SSH gateway.
    let mut terminal = terminal_in(&bob, &id);
    let key = gateway_key(d.path(), &bob);
    let port = listen.rsplit_once(':').unwrap().1;
    let (mut gateway, _lines) = gateway_session(&key, port);

    // An operator manages only what is below them, and no one themselves.
    for (args, why) in [
        (vec!["user", "rm", "admin"], "only an admin"),
        (vec!["user", "set-role", "vic", "admin"], "needs the admin role"),
        (vec!["user", "set-role", "vic", "operator"], "needs the admin role"),
        (vec!["user", "disable", "opal"], "cannot change your own account"),
    ] {
        let o = river(&opal, &args);
        assert!(!o.status.success(), "{args:?} was allowed");
        assert!(text(&o).1.contains(why), "{args:?}: {:?}", text(&o));
    }
    let o = river(&admin, &["user", "rm", "admin"]);
    assert!(!o.status.success(), "the admin removed themselves");

    // The operator removes bob: everything he has open closes at once; his task runs on.
    let o = river(&opal, &["user", "rm", "bob"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let removed = Instant::now();
    assert!(text(&o).0.contains("1 of their tasks kept"), "{:?}", text(&o));
    let t = ends_within(&mut terminal, removed, "bob's terminal");
    let g = ends_within(&mut gateway, removed, "bob's gateway session");
    eprintln!("bob's terminal closed after {t:?}, his gateway session after {g:?}");
    let o = river(&bob, &["whoami"]);
    assert!(
        !o.status.success(),
        "a removed user's certificate works: {:?}",
        text(&o)
    );
    let (users, _) = text(&river(&admin, &["user", "list"]));
    assert!(
        users.lines().any(|l| l.starts_with("bob") && l.contains("removed")),
        "{users}"
    );
    let (status, _) = text(&river(&admin, &["task", "status", &id]));
    assert!(status.contains("running"), "{status}");
    // The name is never given to someone else, who would own what is left of bob's; and he
    // does not come back by a reissue either.
    let o = river(&admin, &["user", "invite", "bob", "--role", "user"]);
    assert!(
        !o.status.success() && text(&o).1.contains("never given"),
        "{:?}",
        text(&o)
    );
    let o = river(&admin, &["user", "reissue", "bob"]);
    assert!(!o.status.success(), "{:?}", text(&o));
    let o = river(&admin, &["user", "enable", "bob"]);
    assert!(!o.status.success(), "{:?}", text(&o));

    // A role taken down counts at once; disabled keeps everything but lets nothing in.
    let o = river(&opal, &["user", "set-role", "vic", "viewer"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(
        &vic,
        &["task", "submit", "--image", "river-test/busybox:1", "--", "true"],
    );
    assert!(
        !o.status.success() && text(&o).1.contains("user role"),
        "{:?}",
        text(&o)
    );
    let o = river(&admin, &["user", "disable", "vic"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&vic, &["whoami"]);
    assert!(!o.status.success() && text(&o).1.contains("disabled"), "{:?}", text(&o));
    assert!(text(&river(&admin, &["user", "list"])).0.contains("disabled"));
    let o = river(&admin, &["user", "enable", "vic"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (who, _) = text(&river(&vic, &["whoami"]));
    assert!(who.contains("vic") && who.contains("viewer"), "{who}");
    assert!(river(&admin, &["task", "kill", &id]).status.success());

    // The audit trail says what happened to bob and who did it, and what opal was refused.
    let o = river(&admin, &["audit", "--user", "bob", "-o", "json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let events: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let has = |actor: &str, action: &str| events.iter().any(|e| e["actor"] == actor && e["action"] == action);
    assert!(
        has("user bob", "user.login") && has("user opal", "user.rm"),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e["actor"] == "user vic"), "{events:?}");
    let (opal_did, _) = text(&river(&admin, &["audit", "--user", "opal", "--since", "1h"]));
    assert!(
        opal_did.contains("refused") && opal_did.contains("UserRemove"),
        "{opal_did}"
    );
    let o = river(&vic, &["audit"]);
    assert!(
        !o.status.success() && text(&o).1.contains("operator role"),
        "{:?}",
        text(&o)
    );

    // Removed with --kill-tasks: their work ends too.
    let carl = person(d.path(), &admin, &listen, "carl", "user");
    let his = running_task(&carl, &["--image", "river-test/busybox:1", "--", "sleep", "600"]);
    let o = river(&admin, &["user", "rm", "carl", "--kill-tasks"]);
    assert!(
        o.status.success() && text(&o).0.contains("1 of their tasks killed"),
        "{:?}",
        text(&o)
    );
    until(Duration::from_secs(30), "carl's task killed", || {
        text(&river(&admin, &["task", "status", &his])).0.contains("killed")
    });
}

#[test]
fn a_vps_shared_with_a_colleague_is_theirs_to_reach_not_to_remove() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let ann = person(d.path(), &admin, &listen, "ann", "user");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let (ann_key, bob_key) = (d.path().join("ann_key"), d.path().join("bob_key"));
    keygen(&ann_key);
    keygen(&bob_key);
    let ann_pub = ann_key.with_extension("pub");
    let o = river(
        &ann,
        &[
            "vps",
            "create",
            "--image",
            "river-test/busybox:1",
            "--ssh-key",
            ann_pub.to_str().unwrap(),
            "--wait",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();
    let o = river(
        &bob,
        &["user", "key", "add", bob_key.with_extension("pub").to_str().unwrap()],
    );
    assert!(o.status.success(), "{:?}", text(&o));

    // Not shared: bob reaches nothing of it.
    let o = river(&bob, &["connect", &id, "--", "true"]);
    assert!(
        !o.status.success() && text(&o).1.contains("belongs to"),
        "{:?}",
        text(&o)
    );
    assert!(!output_within(&mut vps_ssh_command(&bob, &id, &bob_key, &["true"]))
        .status
        .success());
    // Only its owner shares it.
    let o = river(&bob, &["vps", "share", &id, "bob"]);
    assert!(!o.status.success(), "bob shared ann's VPS with himself: {:?}", text(&o));

    let o = river(&ann, &["vps", "share", &id, "bob"]);
    assert!(
        o.status.success() && text(&o).0.contains("shared with bob"),
        "{:?}",
        text(&o)
    );
    // Shared: bob logs in over SSH with his own key, and connects.
    let o = output_within(&mut vps_ssh_command(
        &bob,
        &id,
        &bob_key,
        &["sh", "-c", "'echo bob-was-here > /root/from-bob; whoami'"],
    ));
    assert_eq!(text(&o).0.trim(), "root", "{:?}", text(&o));
    let o = river(&bob, &["connect", &id, "--", "cat", "/root/from-bob"]);
    assert_eq!(text(&o).0.trim(), "bob-was-here", "{:?}", text(&o));
    // His key is not the VPS's: ann's stays the only one it keeps.
    let (keys, _) = text(&river(&ann, &["vps", "keys", "list", &id]));
    assert!(!keys.contains(&std::fs::read_to_string(bob_key.with_extension("pub")).unwrap()[..40]));
    // Stopping or removing it stays ann's.
    for args in [vec!["vps", "stop", &id], vec!["vps", "rm", &id]] {
        let o = river(&bob, &args);
        assert!(!o.status.success(), "bob ran {args:?}: {:?}", text(&o));
    }

    // Unshared: his open session closes and he is refused again.
    let mut open = terminal_in(&bob, &id);
    let o = river(&ann, &["vps", "unshare", &id, "bob"]);
    assert!(o.status.success(), "{:?}", text(&o));
    ends_within(&mut open, Instant::now(), "bob's session in the unshared VPS");
    let o = river(&bob, &["connect", &id, "--", "true"]);
    assert!(!o.status.success(), "{:?}", text(&o));
    assert!(!output_within(&mut vps_ssh_command(&bob, &id, &bob_key, &["true"]))
        .status
        .success());
    assert!(river(&ann, &["vps", "rm", &id]).status.success());
}

/// Task `id`'s record as the admin sees it.
fn task_json(admin: &Path, id: &str) -> serde_json::Value {
    let o = river(admin, &["task", "status", id, "-o", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

#[test]
fn a_user_with_a_long_queue_does_not_make_another_wait_behind_it() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let ann = person(d.path(), &admin, &listen, "ann", "user");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    // Ann queues 40 one-core tasks at once (one per target), far more than the node's cores.
    let mut args = vec!["task", "submit", "--no-container"];
    for _ in 0..40 {
        args.extend(["-t", "n1"]);
    }
    args.extend(["--", "sleep", "2"]);
    let o = river(&ann, &args);
    assert!(o.status.success(), "{:?}", text(&o));
    let anns: Vec<String> = text(&o).0.split_whitespace().map(str::to_owned).collect();
    assert_eq!(anns.len(), 40, "{:?}", text(&o));
    until(Duration::from_secs(60), "ann's first tasks running", || {
        task_json(&admin, &anns[0])["state"] == "running"
    });
    // Bob comes after all of them, with one task.
    let o = river(&bob, &["task", "submit", "--no-container", "--", "true"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let his = text(&o).0.trim().to_owned();
    until(Duration::from_secs(60), "bob's task done", || {
        task_json(&admin, &his)["state"] == "completed"
    });
    // He got the next free core: ann had only a handful started by then, not all 40.
    let started = anns
        .iter()
        .filter(|id| !task_json(&admin, id)["started_at_ms"].is_null())
        .count();
    assert!(started <= 6, "bob waited behind {started} of ann's tasks");
    for id in &anns {
        let _ = river(&admin, &["task", "kill", id]);
    }
}

/// A new key pair in `dir/bob_key`, registered for the SSH gateway by the user of `cfg`.
fn gateway_key(dir: &Path, cfg: &Path) -> PathBuf {
    let key = dir.join("bob_key");
    keygen(&key);
    let o = river(
        cfg,
        &["user", "key", "add", key.with_extension("pub").to_str().unwrap()],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    key
}

/// An `ssh -N` session on the host's SSH gateway at `port` with `key`, once logged in: the client
/// (it sends nothing of its own, not even keepalives) and the lines it prints from then on.
fn gateway_session(key: &Path, port: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut ssh = Command::new("ssh")
        .args(["-v", "-N", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "ServerAliveInterval=0", "-i"])
        .arg(key)
        .args(["-p", port, "river@127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(ssh.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the gateway session was not set up")
        .contains("Authenticated to")
    {}
    (ssh, lines)
}

/// Established TCP connections to the host's port `port`.
fn established_to(port: &str) -> usize {
    let o = Command::new("ss")
        .args(["-Htn", "state", "established", &format!("( sport = :{port} )")])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[test]
fn a_gateway_client_that_went_away_is_dropped_and_an_idle_one_kept() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let key = gateway_key(d.path(), &bob);
    let port = listen.rsplit_once(':').unwrap().1;
    // Two sessions that send nothing: one client stays (idle), the other goes away (its process
    // frozen, as a laptop closed mid-session: it answers nothing, and closes nothing).
    let (mut idle, _idle_lines) = gateway_session(&key, port);
    let (mut gone, _gone_lines) = gateway_session(&key, port);
    until(Duration::from_secs(10), "both sessions are up", || {
        established_to(port) == 2
    });
    let pid = gone.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let frozen = Instant::now();
    // Before, a session was kept however long its client was silent: the host still counted it.
    until(
        Duration::from_secs(90),
        "the host drops the client that went away",
        || established_to(port) == 1,
    );
    eprintln!("dropped {:?} after its client went away", frozen.elapsed());
    // The idle one is still there, and still bob's.
    assert!(idle.try_wait().unwrap().is_none(), "the idle session ended");
    let o = river(&admin, &["user", "disable", "bob"]);
    assert!(text(&o).0.contains("1 open connection(s) closed"), "{:?}", text(&o));
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = gone.kill();
    let _ = idle.kill();
    let _ = (gone.wait(), idle.wait());
}
