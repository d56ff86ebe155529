//! Scripts and supervisors: API tokens a CI job calls the HTTPS API with (`curl -H
//! "Authorization: Bearer …"`), and approvals an operator gives or refuses. Real `river host` and
//! runner processes, the real Docker engine, `curl` as a script would use it.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::path::Path;
use std::time::Duration;

/// `curl` against the host's HTTPS API with `token` (none: no credentials at all), trusting the
/// cluster CA from `cfg`: (status, body).
fn api(cfg: &Path, listen: &str, token: Option<&str>, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-m", "30", "-w", "\n%{http_code}", "--cacert"])
        .arg(cfg.join("ca.crt"))
        .args(["-X", method]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", b]);
    }
    let port = listen.rsplit_once(':').unwrap().1;
    c.arg(format!("https://localhost:{port}{path}"));
    let out = output_within(&mut c);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// `river user token create ARGS` as the user of `cfg`: the token printed.
fn new_token(cfg: &Path, args: &[&str]) -> String {
    let mut all = vec!["user", "token", "create"];
    all.extend_from_slice(args);
    let o = river(cfg, &all);
    assert!(o.status.success(), "{:?}", text(&o));
    text(&o).0.trim().to_owned()
}

const SPEC: &str = r#"{"command": ["true"], "image": "river-test/busybox:1"}"#;

#[test]
fn an_api_token_acts_as_its_user_and_never_more() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "tok-node");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let vic = person(d.path(), &admin, &listen, "vic", "viewer");

    // What the commands print is ready to paste: the host's real address, not a placeholder.
    let o = river(&admin, &["user", "invite", "pat", "--role", "viewer"]);
    assert!(
        text(&o).1.contains(&format!("river login {listen} --token rvt1.")),
        "{:?}",
        text(&o)
    );
    let o = river(&admin, &["token", "create"]);
    assert!(
        text(&o).1.contains(&format!("river runner --join {listen}")),
        "{:?}",
        text(&o)
    );
    let o = river(&bob, &["user", "token", "create", "--name", "pasted"]);
    let line = text(&o)
        .1
        .lines()
        .find(|l| l.trim_start().starts_with("curl"))
        .unwrap()
        .to_owned();
    let pasted = std::process::Command::new("sh")
        .args(["-c", &format!("{} -s -o /dev/null -w '%{{http_code}}'", line.trim())])
        .env("TOKEN", text(&o).0.trim())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pasted.stdout), "200", "{line}: {pasted:?}");
    // A read-only token for a dashboard script, and one that may submit, for CI.
    let ro = new_token(&bob, &["--name", "dash", "--ttl", "1h", "--role", "viewer"]);
    let ci = new_token(&bob, &["--name", "ci"]);
    assert!(ro.starts_with("rvk1.") && ro != ci, "{ro}");
    let (code, body) = api(&admin, &listen, Some(&ro), "GET", "/api/tasks", None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = api(&admin, &listen, Some(&ro), "POST", "/api/tasks", Some(SPEC));
    assert_eq!(code, 403, "a viewer token submitted: {body}");
    let (code, body) = api(&admin, &listen, Some(&ci), "POST", "/api/tasks", Some(SPEC));
    assert_eq!(code, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["ids"][0]
        .as_u64()
        .unwrap();
    // It acts as bob: the task is his, and he (not only the token) may kill it.
    let (_, body) = api(&admin, &listen, Some(&ci), "GET", &format!("/api/tasks/{id}"), None);
    assert!(body.contains("\"owner\":\"user bob\""), "{body}");
    // A token never does more than its user: bob may not make an admin one, nor an operator's.
    for role in ["admin", "operator"] {
        let o = river(&bob, &["user", "token", "create", "--name", "up", "--role", role]);
        assert!(
            !o.status.success() && text(&o).1.contains("at most what you may"),
            "{:?}",
            text(&o)
        );
    }
    // Names are his own to reuse only once revoked.
    let o = river(&bob, &["user", "token", "create", "--name", "ci"]);
    assert!(!o.status.success() && text(&o).1.contains("already"), "{:?}", text(&o));

    // The host keeps no secret: nothing it wrote holds a token's text.
    let secret = ci.rsplit('.').next().unwrap();
    for f in std::fs::read_dir(d.path().join("host")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the token's secret",
                f.display()
            );
        }
    }
    // Listed with their last use, never their secret.
    let o = river(&bob, &["user", "token", "list", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    assert!(
        of("ci")["last_used_ms"].is_i64() && of("dash")["role"] == "viewer",
        "{listed}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(secret));
    // A viewer may not see someone else's tokens; an admin may, and may revoke them.
    let o = river(&vic, &["user", "token", "list", "--user", "bob"]);
    assert!(!o.status.success(), "{:?}", text(&o));
    let o = river(&admin, &["user", "token", "list", "--user", "bob"]);
    assert!(text(&o).0.contains("dash"), "{:?}", text(&o));
    let o = river(&admin, &["user", "token", "revoke", "dash", "--user", "bob"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (code, body) = api(&admin, &listen, Some(&ro), "GET", "/api/tasks", None);
    assert_eq!(code, 401, "a revoked token still worked: {body}");

    // The user's role caps the token when it is used: bob made a viewer, his CI token submits no more.
    let o = river(&admin, &["user", "set-role", "bob", "viewer"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (code, body) = api(&admin, &listen, Some(&ci), "POST", "/api/tasks", Some(SPEC));
    assert_eq!(code, 403, "{body}");
    // Disabled: nothing; enabled again: as before; removed: never again.
    assert!(river(&admin, &["user", "disable", "bob"]).status.success());
    let (code, body) = api(&admin, &listen, Some(&ci), "GET", "/api/status", None);
    assert_eq!(code, 401, "{body}");
    assert!(river(&admin, &["user", "enable", "bob"]).status.success());
    let (code, body) = api(&admin, &listen, Some(&ci), "GET", "/api/status", None);
    assert_eq!(code, 200, "{body}");
    assert!(river(&admin, &["user", "rm", "bob"]).status.success());
    let (code, body) = api(&admin, &listen, Some(&ci), "GET", "/api/status", None);
    assert_eq!(code, 401, "a removed user's token still worked: {body}");

    // Expired, made up, or not a token at all.
    let short = new_token(&vic, &["--name", "short", "--ttl", "2s"]);
    assert_eq!(api(&admin, &listen, Some(&short), "GET", "/api/status", None).0, 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(api(&admin, &listen, Some(&short), "GET", "/api/status", None).0, 401);
    let forged = format!("{}.{}", &short[..short.rfind('.').unwrap()], "A".repeat(43));
    assert_eq!(api(&admin, &listen, Some(&forged), "GET", "/api/status", None).0, 401);
    let (code, body) = api(&admin, &listen, Some("hunter2"), "GET", "/api/status", None);
    assert!(code == 401 && body.contains("not a river API token"), "{code} {body}");
    assert_eq!(api(&admin, &listen, None, "GET", "/api/status", None).0, 401);
}

#[test]
fn what_a_guest_submits_waits_for_an_operator() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process_with(d.path(), &listen, "approval_roles = [\"user\", \"operator\"]\n");
    let _runner = runner_process(d.path(), &admin, &listen, "appr-node");
    let gus = person(d.path(), &admin, &listen, "gus", "user");
    let opal = person(d.path(), &admin, &listen, "opal", "operator");
    let state = |id: &str| {
        let o = river(&admin, &["task", "status", id, "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()
    };
    let submit = |cfg: &Path, args: &[&str]| {
        let mut all = vec!["task", "submit", "--image", "river-test/busybox:1"];
        all.extend_from_slice(args);
        let o = river(cfg, &all);
        assert!(o.status.success(), "{:?}", text(&o));
        (text(&o).0.trim().to_owned(), text(&o).1)
    };

    // The guest's task waits, and says so; the admin's (a role not asked) runs at once.
    let (id, note) = submit(&gus, &["--", "echo", "approved-output"]);
    assert!(note.contains("approval"), "{note}");
    assert_eq!(state(&id)["state"], "pending_approval");
    let (mine, _) = submit(&admin, &["--", "true"]);
    until(Duration::from_secs(60), "the admin's task ends", || {
        state(&mine)["state"] == "completed"
    });
    // The node was free all along and ran the later task: the scheduler ignored the guest's.
    assert_eq!(state(&id)["state"], "pending_approval", "{}", state(&id));
    let o = river(&opal, &["task", "list", "-s", "pending_approval", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Nobody approves their own, and a user approves nothing.
    let o = river(&gus, &["task", "approve", &id]);
    assert!(!o.status.success() && text(&o).1.contains("operator"), "{:?}", text(&o));
    let (own, _) = submit(&opal, &["--", "true"]);
    let o = river(&opal, &["task", "approve", &own]);
    assert!(!o.status.success() && text(&o).1.contains("yours"), "{:?}", text(&o));
    assert!(river(&opal, &["task", "kill", &own]).status.success());
    // The operator approves: it runs, and its output is there.
    let o = river(&opal, &["task", "approve", &id]);
    assert!(o.status.success(), "{:?}", text(&o));
    until(Duration::from_secs(60), "the approved task ends", || {
        state(&id)["state"] == "completed"
    });
    let o = river(&gus, &["task", "logs", &id]);
    assert_eq!(text(&o).0, "approved-output\n");
    // Approving twice is refused with what it is now.
    let o = river(&opal, &["task", "approve", &id]);
    assert!(
        !o.status.success() && text(&o).1.contains("completed"),
        "{:?}",
        text(&o)
    );

    // A rejection needs a reason, ends the task without running it, and its owner reads why.
    let (bad, _) = submit(&gus, &["--", "touch", "/should-not-run"]);
    let o = river(&opal, &["task", "reject", &bad, "--reason", " "]);
    assert!(!o.status.success() && text(&o).1.contains("reason"), "{:?}", text(&o));
    let o = river(&opal, &["task", "reject", &bad, "--reason", "asks for too much"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&gus, &["task", "status", &bad, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "killed");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("rejected by user opal: asks for too much"),
        "{v}"
    );
    assert!(v["started_at_ms"].is_null(), "{v}");
    // The guest may still cancel what waits; and the audit trail has both decisions.
    let (gone, _) = submit(&gus, &["--", "true"]);
    assert!(river(&gus, &["task", "kill", &gone]).status.success());
    assert_eq!(state(&gone)["state"], "killed");
    let o = river(&admin, &["audit", "-o", "json"]);
    let audit = text(&o).0;
    assert!(
        audit.contains("task.approve") && audit.contains("task.reject"),
        "{audit}"
    );
}

#[test]
fn a_users_limits_hold_their_tasks_back_and_no_one_elses() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = "[limits]\nrunning_cores = 1\nvps = 1\n";
    let (_host, admin) = host_process_with(d.path(), &listen, config);
    let _runner = runner_process(d.path(), &admin, &listen, "lim-node");
    let ann = person(d.path(), &admin, &listen, "ann", "user");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let opal = person(d.path(), &admin, &listen, "opal", "operator");
    let state = |id: &str| {
        let o = river(&admin, &["task", "status", id, "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let submit = |cfg: &Path, args: &[&str]| {
        let mut all = vec!["task", "submit", "--image", "river-test/busybox:1"];
        all.extend_from_slice(args);
        river(cfg, &all)
    };
    let id_of = |o: std::process::Output| {
        assert!(o.status.success(), "{:?}", text(&o));
        text(&o).0.trim().to_owned()
    };

    // What can never fit is refused at once, with the reason.
    let o = submit(&ann, &["-c", "2", "--", "true"]);
    assert!(
        !o.status.success() && text(&o).1.contains("at most 1"),
        "{:?}",
        text(&o)
    );
    let o = river(&admin, &["user", "limits", "ann", "--running-gpus", "1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = submit(&ann, &["--gpus", "2", "--", "true"]);
    assert!(
        !o.status.success() && text(&o).1.contains("2 GPUs at once"),
        "{:?}",
        text(&o)
    );

    // The node has two cores; ann may hold one: her second task waits while bob's, submitted
    // after it, runs on the other.
    let first = id_of(submit(&ann, &["--", "sleep", "300"]));
    wait_running(&ann, &first);
    let second = id_of(submit(&ann, &["--", "sleep", "300"]));
    let bobs = id_of(submit(&bob, &["--", "sleep", "300"]));
    wait_running(&bob, &bobs);
    // Each sees their own with --mine; anyone's with --owner.
    let owners = |cfg: &Path, args: &[&str]| {
        let mut all = vec!["task", "list", "-o", "json"];
        all.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_slice(&river(cfg, &all).stdout).unwrap();
        let mut o: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["owner"].as_str().unwrap().to_owned())
            .collect();
        o.dedup();
        o
    };
    assert_eq!(owners(&bob, &["--mine"]), vec!["user bob"]);
    assert_eq!(owners(&admin, &["--owner", "ann"]), vec!["user ann"]);
    assert_eq!(owners(&admin, &["--all"]).len(), 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&second), "queued", "ann's second task ran past her limit");
    // Her limit raised (an operator may, for a user), the waiting one starts once a core is free.
    let o = river(&ann, &["user", "limits", "ann", "--running-cores", "2"]);
    assert!(!o.status.success(), "a user raised her own limit: {:?}", text(&o));
    let o = river(&opal, &["user", "limits", "ann", "--running-cores", "2"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(river(&bob, &["task", "kill", &bobs]).status.success());
    wait_running(&ann, &second);
    // She sees her own limits and where they come from; not bob's.
    let o = river(&ann, &["user", "limits", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["effective"]["running_cores"], 2, "{v}");
    assert_eq!(v["overrides"]["running_cores"], 2, "{v}");
    assert_eq!(v["effective"]["vps"], 1, "{v}");
    assert!(v["overrides"]["vps"].is_null(), "{v}");
    assert!(!river(&ann, &["user", "limits", "bob"]).status.success());
    for id in [&first, &second] {
        assert!(river(&ann, &["task", "kill", id]).status.success());
    }

    // One VPS each.
    let key = d.path().join("ann_key");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let public = key.with_extension("pub");
    let vps = [
        "vps",
        "create",
        "--image",
        "river-test/busybox:1",
        "--ssh-key",
        public.to_str().unwrap(),
    ];
    let o = river(&ann, &vps);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&ann, &vps);
    assert!(
        !o.status.success() && text(&o).1.contains("at most 1"),
        "{:?}",
        text(&o)
    );
    // Back to the defaults: the GPU limit goes.
    let o = river(&opal, &["user", "limits", "ann", "--reset", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["effective"]["running_gpus"], 0, "{v}");
    assert_eq!(v["effective"]["running_cores"], 1, "{v}");
}

#[test]
fn the_archives_a_user_keeps_stay_within_their_limit() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "arch-node");
    let ann = person(d.path(), &admin, &listen, "ann", "user");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    // The test image's archive is about 2 MiB: ann may keep 3.
    let o = river(&admin, &["user", "limits", "ann", "--archive-mib", "3"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let create = |cfg: &Path, name: &str| river(cfg, &["env", "create", name, "--from", "river-test/busybox:1"]);
    let o = create(&ann, "first");
    assert!(o.status.success(), "{:?}", text(&o));
    // A second would take her past it: refused while it arrives, and nothing of it is kept.
    let o = create(&ann, "second");
    assert!(
        !o.status.success() && text(&o).1.contains("limit of archives"),
        "{:?}",
        text(&o)
    );
    let blobs: Vec<String> = std::fs::read_dir(d.path().join("host").join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!blobs.iter().any(|b| b.starts_with(".incoming")), "{blobs:?}");
    // At her limit, not even the transfer starts; bob's own archives are his own business.
    assert!(create(&bob, "bobs").status.success());
    let o = river(&admin, &["user", "limits", "ann", "--archive-mib", "1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = create(&ann, "third");
    assert!(
        !o.status.success() && text(&o).1.contains("may keep at most 1 MiB"),
        "{:?}",
        text(&o)
    );
    // Room made, room there.
    assert!(river(&ann, &["env", "rm", "first"]).status.success());
    assert!(river(&admin, &["user", "limits", "ann", "--archive-mib", "3"])
        .status
        .success());
    let o = create(&ann, "second");
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn following_a_task_that_waits_in_the_queue_waits_for_its_output() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "busy");
    // Every core of the node taken, so the next task waits.
    let o = river(&admin, &["node", "list", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cores = nodes[0]["info"]["cores"].as_u64().unwrap().to_string();
    let blocker = running_task(
        &admin,
        &["-c", &cores, "--image", "river-test/busybox:1", "--", "sleep", "300"],
    );
    let o = river(
        &admin,
        &[
            "task",
            "submit",
            "--image",
            "river-test/busybox:1",
            "--",
            "sh",
            "-c",
            "echo one; echo two",
        ],
    );
    let id = text(&o).0.trim().to_owned();
    // `submit && logs -f`: before, it failed at once ("has not started yet"). The blocker ends
    // a second later, while it follows.
    let (cfg, b) = (admin.clone(), blocker.clone());
    let freeing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        assert!(river(&cfg, &["task", "kill", &b]).status.success());
    });
    let o = river(&admin, &["task", "logs", "-f", &id]);
    freeing.join().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0, "one\ntwo\n");
    assert!(
        text(&o).1.contains("is queued: it needs 1 core") && text(&o).1.contains("waiting for it to start"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn submit_wait_streams_the_tasks_output_and_ctrl_c_leaves_it_running() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "att");
    let submit = ["task", "submit", "--image", "river-test/busybox:1", "--wait", "--"];
    // Its stdout and stderr here, as it runs, and its exit code (before: only a summary line).
    let mut args = submit.to_vec();
    args.extend(["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let o = river(&admin, &args);
    assert_eq!(o.status.code(), Some(7), "{:?}", text(&o));
    let (out, err) = text(&o);
    assert_eq!(out, "out\n");
    assert!(err.contains("task 1 submitted") && err.contains("err\n"), "{err}");
    assert!(err.contains("task 1 failed (exit code 7)"), "{err}");
    // Short tasks, one after another: every line, every time (the engine's live stream used to
    // end before a short container's last line now and then: "one" of "one\ntwo").
    for i in 0..10 {
        let mut args = submit.to_vec();
        args.extend(["sh", "-c", "echo one; echo two"]);
        let o = river(&admin, &args);
        assert!(o.status.success(), "{:?}", text(&o));
        assert_eq!(text(&o).0, "one\ntwo\n", "run {i}");
    }

    // Ctrl-C: the task goes on, and the user is told how to follow or stop it; with
    // --kill-on-interrupt it is killed.
    for kill in [false, true] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_river"));
        cmd.args(["task", "submit", "--image", "river-test/busybox:1", "--wait"]);
        if kill {
            cmd.arg("--kill-on-interrupt");
        }
        let mut child = cmd
            .args(["--", "sh", "-c", "echo started; sleep 300"])
            .env("RIVER_CONFIG_DIR", &admin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the task's first line");
        assert_eq!(line.trim(), "started");
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{:?}", text(&o));
        let err = text(&o).1;
        let id = err.split_whitespace().nth(1).expect("the id comes first").to_owned();
        let state = |id: &str| {
            let o = river(&admin, &["task", "status", id, "-o", "json"]);
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        if kill {
            assert!(err.contains(&format!("killed task {id}")), "{err}");
            until(Duration::from_secs(30), "the task is killed", || state(&id) == "killed");
        } else {
            assert!(err.contains(&format!("task {id} goes on")), "{err}");
            assert_eq!(state(&id), "running");
            assert!(river(&admin, &["task", "kill", &id]).status.success());
        }
    }
}

#[test]
fn a_script_running_commands_in_a_loop_never_runs_out_of_connections() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    // Each command tells the host it is done as it exits, so 300 in a row (more than the 256
    // connections one user may hold) never hit the cap, however fast they come.
    let start = std::time::Instant::now();
    for i in 0..300 {
        let o = river(&admin, &["whoami"]);
        assert!(o.status.success(), "command {i}: {:?}", text(&o));
    }
    eprintln!("300 commands in {:?}", start.elapsed());
}
