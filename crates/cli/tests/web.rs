//! The web dashboard in a real browser (headless chromium over WebDriver), against real `river
//! host` and `river runner` processes, reached as users reach it: `river ui` and its link.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/webdriver.rs"]
mod webdriver;

use binary::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use webdriver::{browser_ready, Browser, Driver};

const WAIT: Duration = Duration::from_secs(60);

/// `river ui --no-open` as the user of `cfg`: the process and its link.
struct Ui(Child, String);

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Ui {
    fn start(cfg: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_river"))
            .args(["ui", "--no-open"])
            .env("RIVER_CONFIG_DIR", cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let link = lines.recv_timeout(WAIT).expect("river ui printed its link");
        assert!(
            link.starts_with("http://127.0.0.1:") && link.contains("/login?key="),
            "{link}"
        );
        Ui(child, link)
    }

    fn base(&self) -> &str {
        self.1.split("/login").next().unwrap()
    }
}

/// Logs `b` in with `ui`'s link and waits until the page is live.
fn log_in(b: &Browser, ui: &Ui) {
    b.go(&ui.1);
    assert_eq!(b.url(), format!("{}/", ui.base()), "the link leads to the dashboard");
    b.wait_text("#live", WAIT, |t| t == "live");
}

/// A POST from the page's own script to `path`, with `token` as its anti-forgery header (none if
/// empty): the status and body the page gets.
fn post_from_page(b: &Browser, path: &str, token: &str) -> (i64, String) {
    let script = format!(
        "const h = {{}}; const t = {token:?}; if (t === 'cookie') {{ h['X-River-CSRF'] = document.cookie.split('; ').find(c => c.startsWith('river_csrf_')).split('=')[1]; }} else if (t) {{ h['X-River-CSRF'] = t; }}
         fetch({path:?}, {{ method: 'POST', headers: h }}).then(r => r.text().then(body => done([r.status, body])));"
    );
    let v = b.run(&script);
    (v[0].as_i64().unwrap(), v[1].as_str().unwrap_or_default().to_owned())
}

fn screenshots() -> Option<std::path::PathBuf> {
    std::env::var_os("RIVER_WEB_SCREENSHOTS").map(Into::into)
}

#[test]
fn the_dashboard_shows_the_cluster_live_and_runs_a_task_from_its_form() {
    if !browser_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let alice = person(d.path(), &admin, &listen, "alice", "user");
    let ui = Ui::start(&alice);
    let driver = Driver::start(free_port());
    let b = driver.browser();

    // Without the link the dashboard lets no one in; the link works once.
    b.go(&format!("{}/", ui.base()));
    assert!(b.text("body").unwrap().contains("Not logged in"), "{}", b.source());
    log_in(&b, &ui);
    let other = driver.browser();
    other.go(&ui.1);
    assert!(other.text("body").unwrap().contains("used already"));
    drop(other);

    // The overview: the node, online, with its cores; who is logged in.
    let row = b.wait_text("tr[data-node='n1']", WAIT, |t| t.contains("online"));
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(row.contains(&cores.to_string()), "{row}");
    assert_eq!(b.text("#me").unwrap(), "alice (user)");

    // Live: work submitted elsewhere appears without a reload, and goes when it ends.
    let id = running_task(&alice, &["--no-container", "--", "sleep", "300"]);
    let row = format!("#active tr[data-task='{id}']");
    let seen = Instant::now();
    b.wait_text(&row, WAIT, |t| t.contains("running"));
    eprintln!(
        "a task seen running on the page {:?} after the CLI saw it",
        seen.elapsed()
    );
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("overview.png"));
    }
    assert!(river(&alice, &["task", "kill", &id]).status.success());
    let start = Instant::now();
    while !b.all(&row).is_empty() {
        assert!(start.elapsed() < WAIT, "the killed task stayed on the page");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The node's page: its usage over the last hour as charts, from its heartbeats; and
    // `river node show` sums the same hour up.
    b.go(&format!("{}/#/nodes/n1", ui.base()));
    b.wait_text("svg[data-chart='cpu']", WAIT, |t| {
        t.contains("now") && !t.contains("no samples")
    });
    assert!(!b.all("svg[data-chart='memory'] polyline").is_empty());
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("node.png"));
    }
    let (shown, _) = text(&river(&alice, &["node", "show", "n1"]));
    assert!(shown.contains("last hour:   cpu avg"), "{shown}");

    // The environments (the cluster's default one, made at first start) and the network, whose
    // overlay is off here: the page says so, with the host's sentence.
    b.go(&format!("{}/#/envs", ui.base()));
    b.wait_text("#envs", WAIT, |t| t.contains("default:v1"));
    b.go(&format!("{}/#/network", ui.base()));
    b.wait_text("#overlay-off", WAIT, |t| t.contains("overlay network is off"));

    // The submit form: a bad size is refused with the CLI's own sentence.
    b.go(&format!("{}/#/submit", ui.base()));
    b.wait_text("#f-submit", WAIT, |t| t == "Submit");
    b.type_into("#f-command", "echo nothing");
    b.type_into("#f-memory", "8X");
    b.click("#f-submit");
    let said = b.wait_text("#submit-result", WAIT, |t| !t.is_empty());
    let cli = text(&river(&alice, &["task", "submit", "--memory", "8X", "--", "true"])).1;
    assert!(cli.contains(&said), "the page said {said:?}, the CLI {cli:?}");
    // A task through the form: its output appears while it runs, then it completes.
    b.type_into("#f-memory", "64M");
    b.type_into("#f-command", "for i in 1 2 3 4; do echo line-$i; sleep 1; done");
    b.click("#f-process");
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("submit.png"));
    }
    b.click("#f-submit");
    b.wait_text("#stdout", WAIT, |t| t.contains("line-1"));
    // The state and the output as one look at the page (it may be redrawn between two).
    let seen = b.run(
        "const t = id => (document.getElementById(id) || {}).textContent || ''; done([t('task-state'), t('stdout')]);",
    );
    let (state, out) = (seen[0].as_str().unwrap(), seen[1].as_str().unwrap());
    assert!(
        state == "running" || !out.contains("line-4"),
        "the output was shown only once the task had ended ({state}): {out}"
    );
    b.wait_text("#task-state", WAIT, |t| t == "completed");
    b.wait_text("#stdout", WAIT, |t| t.contains("line-4"));
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("task.png"));
    }
    let id = b.url().rsplit('/').next().unwrap().to_owned();
    let shown: serde_json::Value =
        serde_json::from_slice(&river(&alice, &["task", "status", &id, "-o", "json"]).stdout).unwrap();
    assert_eq!(shown["owner"], "user alice");
    assert_eq!(shown["spec"]["memory_bytes"], 64 << 20);

    // A request that changes something without the page's token is refused, even from the page.
    let running = running_task(&alice, &["--no-container", "--", "sleep", "300"]);
    for token in ["", "0123456789abcdef"] {
        let (status, body) = post_from_page(&b, &format!("/api/tasks/{running}/kill"), token);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("anti-forgery"), "{body}");
    }
    let (state, _) = text(&river(&alice, &["task", "status", &running]));
    assert!(state.contains("running"), "a forged kill went through: {state}");
    // The page's own button does it.
    b.go(&format!("{}/#/tasks/{running}", ui.base()));
    b.wait_text("#task-state", WAIT, |t| t == "running");
    b.click("button[data-action='kill']");
    b.wait_text("#task-state", WAIT, |t| t == "killed");
    // Its history, oldest first, as the CLI tells it too.
    let rows = b.wait_text("#history", WAIT, |t| t.contains("killed"));
    let order: Vec<usize> = ["queued", "running", "killed"]
        .iter()
        .map(|s| rows.find(s).unwrap_or_else(|| panic!("{s} missing: {rows}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{rows}");
    let (cli, _) = text(&river(&alice, &["task", "status", &running, "--history"]));
    assert!(cli.contains("WHEN") && cli.contains("killed"), "{cli}");
    if let Some(dir) = screenshots() {
        b.go(&format!("{}/#/tasks", ui.base()));
        b.wait_text("#tasks", WAIT, |t| t.contains("killed"));
        b.screenshot(&dir.join("tasks.png"));
    }
}

#[test]
fn a_viewer_gets_no_actions_and_no_one_reads_another_users_variables() {
    if !browser_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let alice = person(d.path(), &admin, &listen, "alice", "user");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let vic = person(d.path(), &admin, &listen, "vic", "viewer");
    let secret = "hunter2-0c41d7";
    let id = running_task(
        &alice,
        &[
            "--no-container",
            "-e",
            &format!("PASSWORD={secret}"),
            "--",
            "sleep",
            "300",
        ],
    );
    let driver = Driver::start(free_port());

    for (cfg, name) in [(&vic, "vic (viewer)"), (&bob, "bob (user)")] {
        let ui = Ui::start(cfg);
        let b = driver.browser();
        log_in(&b, &ui);
        assert_eq!(b.text("#me").unwrap(), name);
        b.go(&format!("{}/#/tasks/{id}", ui.base()));
        b.wait_text("#task-state", WAIT, |t| t == "running");
        assert!(
            b.all("[data-action]").is_empty(),
            "{name} was offered actions on alice's task"
        );
        assert!(!b.source().contains(secret), "{name} saw alice's password in the page");
        // What the page could fetch does not hold it either.
        let v = b.run(&format!("fetch('/api/tasks/{id}').then(r => r.text()).then(done)"));
        assert!(
            !v.as_str().unwrap().contains(secret),
            "{name} read it from the API: {v}"
        );
        // With the page's own token, a kill is still the host's to allow: refused, as for the CLI.
        let (status, body) = post_from_page(&b, &format!("/api/tasks/{id}/kill"), "cookie");
        assert_eq!(status, 403, "{name}: {body}");
        let cli = text(&river(cfg, &["task", "kill", &id])).1;
        let said: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            cli.contains(said["error"].as_str().unwrap()),
            "the page was told {body}, the CLI {cli}"
        );
        if name.starts_with("vic") {
            assert!(b.all("#nav-submit").is_empty(), "a viewer was offered the submit form");
        }
    }
    // The owner sees her variables, and her buttons.
    let ui = Ui::start(&alice);
    let b = driver.browser();
    log_in(&b, &ui);
    b.go(&format!("{}/#/tasks/{id}", ui.base()));
    b.wait_text("#task-state", WAIT, |t| t == "running");
    assert!(!b.all("button[data-action='kill']").is_empty());
    let v = b.run(&format!("fetch('/api/tasks/{id}').then(r => r.text()).then(done)"));
    assert!(v.as_str().unwrap().contains(secret), "{v}");
    assert!(river(&alice, &["task", "kill", &id]).status.success());
}

/// WebDriver's keys: Enter, and Control (pressed until the null key releases it).
const ENTER: &str = "\u{E007}";
const CTRL: &str = "\u{E009}";
const RELEASE: &str = "\u{E000}";

#[test]
fn a_terminal_in_a_tab_runs_commands_in_the_task_and_only_for_who_may() {
    if !browser_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let alice = person(d.path(), &admin, &listen, "alice", "user");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let id = running_task(&alice, &["--no-container", "--", "sleep", "300"]);
    let driver = Driver::start(free_port());

    let ui = Ui::start(&alice);
    let b = driver.browser();
    log_in(&b, &ui);
    // The task's page links to it.
    b.go(&format!("{}/#/tasks/{id}", ui.base()));
    b.wait_text("#open-terminal", WAIT, |t| t.contains("Terminal"));
    b.go(&format!("{}/ui/terminal.html#{id}", ui.base()));
    b.wait_text("#term-status", WAIT, |t| t == "connected");
    let keys = ".xterm-helper-textarea";
    b.type_keys(keys, &format!("echo hi-$((6*7)){ENTER}"));
    b.wait_text(".xterm-rows", WAIT, |t| t.contains("hi-42"));
    // Ctrl-C reaches the program in the terminal, not the page.
    b.type_keys(keys, &format!("sleep 100{ENTER}"));
    b.type_keys(keys, &format!("{CTRL}c{RELEASE}"));
    b.type_keys(keys, &format!("echo after-$((1+1)){ENTER}"));
    b.wait_text(".xterm-rows", WAIT, |t| t.contains("after-2"));
    // The terminal's size is the window's: the program sees the rows the page shows, and a
    // resized window resizes it.
    let size = |marker: &str| -> (usize, usize) {
        b.type_keys(keys, &format!("echo {marker} $(stty size){ENTER}"));
        let seen = b.wait_text(".xterm-rows", WAIT, |t| {
            t.lines().any(|l| l.starts_with(&format!("{marker} ")))
        });
        let line = seen
            .lines()
            .find(|l| l.starts_with(&format!("{marker} ")))
            .unwrap()
            .to_owned();
        let n: Vec<usize> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
        assert_eq!(n.len(), 2, "{line}");
        (n[0], n[1])
    };
    let shown_rows = || {
        b.run("done(document.querySelectorAll('.xterm-rows > div').length)")
            .as_u64()
            .unwrap() as usize
    };
    let before = size("size-a");
    assert_eq!(before.0, shown_rows());
    b.resize(900, 600);
    until(WAIT, "the terminal follows the window", || shown_rows() != before.0);
    let after = size("size-b");
    assert_eq!(after.0, shown_rows());
    assert!(after.0 < before.0 && after.1 < before.1, "{before:?} then {after:?}");
    // A paste goes to the program as text.
    b.run(
        "const dt = new DataTransfer(); dt.setData('text/plain', 'echo pasted-$((6*7))');
         document.querySelector('.xterm-helper-textarea').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
         done(true);",
    );
    // (The shell takes a paste as text, not as commands: Enter runs it.)
    b.wait_text(".xterm-rows", WAIT, |t| t.contains("echo pasted-$((6*7))"));
    b.type_keys(keys, ENTER);
    b.wait_text(".xterm-rows", WAIT, |t| t.contains("pasted-42"));
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("terminal.png"));
    }
    b.type_keys(keys, &format!("exit 3{ENTER}"));
    b.wait_text("#term-status", WAIT, |t| t == "exited with 3");

    // Bob may read that alice's task runs, but not reach into it.
    let ui = Ui::start(&bob);
    let b = driver.browser();
    log_in(&b, &ui);
    b.go(&format!("{}/ui/terminal.html#{id}", ui.base()));
    b.wait_text("#term-status", WAIT, |t| t.contains("refused"));
    assert!(river(&alice, &["task", "kill", &id]).status.success());
}

#[test]
fn a_vps_is_made_stopped_snapshotted_and_started_from_the_page() {
    if !browser_ready() || !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "n1");
    let alice = person(d.path(), &admin, &listen, "alice", "user");
    let _bob = person(d.path(), &admin, &listen, "bob", "user");
    let key = d.path().join("alice_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let driver = Driver::start(free_port());
    let ui = Ui::start(&alice);
    let b = driver.browser();
    log_in(&b, &ui);

    // Made through the form, with a pasted key: that key logs in.
    b.go(&format!("{}/#/vps", ui.base()));
    b.wait_text("#v-create", WAIT, |t| t == "Create VPS");
    b.type_into("#v-image", "river-test/busybox:1");
    b.type_into("#v-keys", public.trim());
    b.click("#v-create");
    b.wait_text("#task-state", WAIT, |t| t == "running");
    let id = b.url().rsplit('/').next().unwrap().to_owned();
    b.wait_text("#ssh-line", WAIT, |t| t == format!("river ssh {id}"));
    let o = output_within(&mut vps_ssh_command(&alice, &id, &key, &["echo", "in-the-vps"]));
    assert_eq!(text(&o).0.trim(), "in-the-vps", "{:?}", text(&o));

    // A second key added on its page logs in too (from the next login on).
    let second = d.path().join("second_key");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&second)
        .status()
        .unwrap()
        .success());
    let second_public = std::fs::read_to_string(second.with_extension("pub")).unwrap();
    b.type_into("#vps-add-keys", second_public.trim());
    b.click("#vps-add-key");
    b.wait_text("#vps-keys", WAIT, |t| t.matches("ssh-ed25519").count() == 2);
    let o = output_within(&mut vps_ssh_command(&alice, &id, &second, &["echo", "second-key"]));
    assert_eq!(text(&o).0.trim(), "second-key", "{:?}", text(&o));

    // Stopped with its button; a snapshot taken with a message; started again.
    b.click("button[data-action='stop']");
    b.wait_text("#task-state", WAIT, |t| t == "stopped");
    b.type_into("#snapshot-message", "before the start");
    b.click("#take-snapshot");
    b.wait_text("#snapshots", WAIT, |t| t.contains("before the start"));
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("vps.png"));
    }
    b.click("button[data-action='start']");
    b.wait_text("#task-state", WAIT, |t| t == "running");
    let (listed, _) = text(&river(&alice, &["vps", "snapshot", "list", &id]));
    assert!(listed.contains("before the start"), "{listed}");
    // Shared with bob from the page, and no longer.
    let shared = || text(&river(&alice, &["vps", "shares", &id])).0;
    b.type_into("#share-user", "nobody");
    b.click("#share");
    b.wait_text("#view", WAIT, |t| t.contains("no user nobody"));
    b.type_into("#share-user", "bob");
    b.click("#share");
    b.wait_text("#vps-shares", WAIT, |t| t.contains("bob"));
    assert_eq!(shared().trim(), "bob");
    b.click("button[data-unshare='bob']");
    b.wait_text("#vps-shares", WAIT, |t| t.contains("No one"));
    assert_eq!(shared().trim(), "");
    // Restarted with one button: stopped, then running again — its history says so.
    b.click("button[data-action='restart']");
    let states = || -> Vec<String> {
        let o = river(&alice, &["task", "status", &id, "--history", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["history"].as_array().map_or(Vec::new(), |h| {
            h.iter().map(|c| c["state"].as_str().unwrap_or("").to_owned()).collect()
        })
    };
    until(WAIT, "the VPS is stopped and started again", || {
        let s = states();
        s.iter().filter(|s| *s == "stopped").count() == 2 && s.last().map(String::as_str) == Some("running")
    });
    b.wait_text("#task-state", WAIT, |t| t == "running");
    until(WAIT, "the page's history shows both stops", || {
        b.all("#history tr[data-state='stopped']").len() == 2
    });

    // An environment made from an image on the node, then removed, from its page.
    b.go(&format!("{}/#/envs", ui.base()));
    b.wait_text("#env-create", WAIT, |t| t == "Create");
    b.type_into("#env-name", "tools");
    b.type_into("#env-from", "river-test/busybox:1");
    b.click("#env-create");
    b.wait_text("tr[data-env='tools']", WAIT, |t| t.contains("tools:v1"));
    let (envs, _) = text(&river(&alice, &["env", "list"]));
    assert!(envs.contains("tools"), "{envs}");
    b.click("button[data-remove-env='tools']");
    b.accept_dialog();
    let start = std::time::Instant::now();
    while !b.all("tr[data-env='tools']").is_empty() {
        assert!(start.elapsed() < WAIT, "the removed environment stayed on the page");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!text(&river(&alice, &["env", "list"])).0.contains("tools"));
    let o = river(&alice, &["vps", "rm", &id, "--yes"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn an_api_token_made_on_the_account_page_works_for_scripts_until_revoked() {
    if !browser_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let driver = Driver::start(free_port());
    let ui = Ui::start(&bob);
    let b = driver.browser();
    log_in(&b, &ui);
    b.go(&format!("{}/#/account", ui.base()));
    b.wait_text("#token-create", WAIT, |t| t == "Create");
    // One's own limits, as `river user limits` tells them.
    let o = river(&admin, &["user", "limits", "bob", "--vps", "3"]);
    assert!(o.status.success(), "{:?}", text(&o));
    b.go(&format!("{}/#/", ui.base()));
    b.go(&format!("{}/#/account", ui.base()));
    b.wait_text("#my-limits tr[data-limit='vps']", WAIT, |t| t.contains('3'));
    assert!(
        b.all("#token-role option[value='operator']").is_empty(),
        "a user was offered a higher role"
    );
    b.type_into("#token-name", "ci");
    b.click("#token-create");
    let token = b.wait_text("#secret-token", WAIT, |t| t.starts_with("rvk1."));
    let whoami = |token: &str| {
        let o = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(bob.join("ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("https://{listen}/api/whoami"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let me = whoami(&token);
    assert!(me.contains("\"user bob\""), "{me}");
    b.wait_text("tr[data-api-token='ci']", WAIT, |t| t.contains("user"));
    b.click("button[data-revoke='ci']");
    b.wait_text("tr[data-api-token='ci']", WAIT, |t| t.contains("revoked"));
    let refused = whoami(&token);
    assert!(refused.contains("error"), "a revoked token still works: {refused}");
    // "Log out" spends this dashboard's session, as the link was spent.
    b.click("#logout");
    b.wait_text("body", WAIT, |t| t.contains("Not logged in"));
    b.go(&format!("{}/#/account", ui.base()));
    assert!(b.text("body").unwrap().contains("Not logged in"));
}

#[test]
fn an_operator_invites_and_changes_people_from_the_admin_page_and_a_user_has_none() {
    if !browser_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let opal = person(d.path(), &admin, &listen, "opal", "operator");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    let driver = Driver::start(free_port());

    // A user has no admin page, and the routes behind it refuse him.
    let ui = Ui::start(&bob);
    let b = driver.browser();
    log_in(&b, &ui);
    assert!(b.all("#nav-admin").is_empty(), "a user was offered the admin page");
    let v = b.run("fetch('/api/users').then(r => done(r.status))");
    assert_eq!(v, 403);

    // The operator invites carol from the page; the token shown logs her in.
    let ui = Ui::start(&opal);
    let b = driver.browser();
    log_in(&b, &ui);
    b.go(&format!("{}/#/admin", ui.base()));
    b.wait_text("#users", WAIT, |t| t.contains("bob"));
    b.type_into("#invite-name", "carol");
    b.click("#invite-name + select + button");
    let token = b.wait_text("#secret-token", WAIT, |t| t.starts_with("rvt1."));
    let carol = login(d.path(), &listen, "carol", &token);
    let (who, _) = text(&river(&carol, &["whoami"]));
    assert!(who.contains("carol") && who.contains("(user)"), "{who}");
    // Her role, changed in the table (read again: people are not among the live events), counts
    // at once.
    b.go(&format!("{}/#/", ui.base()));
    b.go(&format!("{}/#/admin", ui.base()));
    b.wait_text("tr[data-user='carol']", WAIT, |t| t.contains("active"));
    b.run("const s = document.querySelector(\"select[data-role-of='carol']\"); s.value = 'viewer'; s.dispatchEvent(new Event('change')); done(true);");
    until(std::time::Duration::from_secs(30), "carol is a viewer", || {
        text(&river(&carol, &["whoami"])).0.contains("(viewer)")
    });
    // Bob's limits, set from the page, count for the CLI; then back to the cluster's defaults.
    let limits = || -> serde_json::Value {
        serde_json::from_slice(&river(&opal, &["-o", "json", "user", "limits", "bob"]).stdout).unwrap_or_default()
    };
    b.click("button[data-limits-of='bob']");
    b.wait_text("#limits-of", WAIT, |t| t.contains("bob"));
    b.type_into("#limit-running_cores", "2");
    b.click("#limits-save");
    until(std::time::Duration::from_secs(30), "bob may hold 2 cores", || {
        limits()["overrides"]["running_cores"] == 2
    });
    b.wait_text("tr[data-limit='running_cores']", WAIT, |t| t.contains('2'));
    b.click("#limits-reset");
    until(
        std::time::Duration::from_secs(30),
        "bob's limits are the defaults",
        || limits()["overrides"]["running_cores"].is_null(),
    );
    // The operator cannot make anyone an admin: the host refuses, as for the CLI.
    assert!(b.all("#invite-role option[value='admin']").is_empty());
    if let Some(dir) = screenshots() {
        b.go(&format!("{}/#/admin", ui.base()));
        b.wait_text("#audit", WAIT, |t| t.contains("carol"));
        b.screenshot(&dir.join("admin.png"));
    }
}
