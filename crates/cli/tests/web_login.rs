//! The dashboard at the host's own address (`[web]` in the host config), with the lab's own
//! certificate: one-time links from `river ui --link`, browser sessions that follow their link's
//! role, expire, are listed and revoked — each against a real `river host` process, through curl
//! and a real browser (headless chromium over WebDriver).

#[path = "support/binary.rs"]
mod binary;
#[path = "support/labcert.rs"]
mod labcert;
#[path = "support/webdriver.rs"]
mod webdriver;

use binary::*;
use labcert::lab_certificate;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use webdriver::{browser_ready, Driver};

const WAIT: Duration = Duration::from_secs(60);

/// A host serving the dashboard at `https://localhost:PORT` with the lab's certificate.
struct WebHost {
    _host: Proc,
    admin: PathBuf,
    listen: String,
    port: u16,
    cert: PathBuf,
    spki: String,
}

fn web_host(dir: &Path, extra: &str) -> WebHost {
    let (cert, key, spki) = lab_certificate(dir).expect("openssl made the lab's certificate");
    let listen = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let config = format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nurl = \"https://localhost:{port}\"\n{extra}",
        cert.display(),
        key.display()
    );
    let (host, admin) = host_process_with(dir, &listen, &config);
    WebHost {
        _host: host,
        admin,
        listen,
        port,
        cert,
        spki,
    }
}

/// `river ui --link` as the user of `cfg`: the link it prints.
fn link(cfg: &Path) -> String {
    let o = river(cfg, &["ui", "--link"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let link = text(&o).0.trim().to_owned();
    assert!(link.contains("/login?key="), "{link}");
    link
}

/// One browser as curl plays it: its cookies in a jar of its own.
struct Curl<'a> {
    web: &'a WebHost,
    jar: PathBuf,
}

impl<'a> Curl<'a> {
    fn new(web: &'a WebHost, dir: &Path, name: &str) -> Self {
        Curl {
            web,
            jar: dir.join(format!("{name}.cookies")),
        }
    }

    fn origin(&self) -> String {
        format!("https://localhost:{}", self.web.port)
    }

    /// A request with `headers`: (status, body).
    fn call(&self, method: &str, path: &str, headers: &[String], body: Option<&str>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-s", "-m", "30", "-w", "\n%{http_code}", "--cacert"])
            .arg(&self.web.cert)
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(["-X", method]);
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            c.args(["--data-raw", b]);
        }
        c.arg(format!("{}{path}", self.origin()));
        let out = output_within(&mut c);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The page's anti-forgery token, from the cookie the page's script reads.
    fn token(&self) -> String {
        let jar = std::fs::read_to_string(&self.jar).unwrap_or_default();
        jar.lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f.len() == 7 && f[5] == "__Host-river_csrf")
            .map(|f| f[6].to_owned())
            .unwrap_or_default()
    }

    /// A change as the page makes it: its token and its origin.
    fn change(&self, method: &str, path: &str) -> (u16, String) {
        let headers = [
            format!("X-River-CSRF: {}", self.token()),
            format!("Origin: {}", self.origin()),
        ];
        self.call(method, path, &headers, None)
    }

    /// Opens `link` and presses its button: (status, page).
    fn log_in(&self, link: &str) -> (u16, String) {
        let path = link.trim_start_matches(&self.origin());
        let key = link.split("key=").nth(1).unwrap();
        let (code, page) = self.call("GET", path, &[], None);
        assert_eq!(code, 200, "{page}");
        assert!(page.contains("<form method=post action=/login>"), "{page}");
        self.call(
            "POST",
            "/login",
            &[format!("Origin: {}", self.origin())],
            Some(&format!("key={key}")),
        )
    }

    fn whoami(&self) -> (u16, String) {
        self.call("GET", "/api/whoami", &[], None)
    }
}

#[test]
fn a_link_logs_one_browser_in_at_its_role_and_forgeries_and_other_sites_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let web = web_host(d.path(), "");
    let _runner = runner_process(d.path(), &web.admin, &web.listen, "n1");
    let alice = person(d.path(), &web.admin, &web.listen, "alice", "user");
    let bob = person(d.path(), &web.admin, &web.listen, "bob", "user");
    let a = Curl::new(&web, d.path(), "alice");

    // Nothing without a session; the page says how to get one.
    let (code, page) = a.call("GET", "/", &[], None);
    assert_eq!(code, 401);
    assert!(page.contains("river ui --link"), "{page}");
    let (code, body) = a.whoami();
    assert_eq!(code, 401, "{body}");

    // Opening the link asks first (a mail scanner's fetch does not spend it); a login posted
    // from another site is refused (it would log the victim in to someone else's account).
    let l = link(&alice);
    let key = l.split("key=").nth(1).unwrap();
    let (code, _) = a.call("GET", l.trim_start_matches(&a.origin()), &[], None);
    assert_eq!(code, 200);
    let (code, page) = a.call(
        "POST",
        "/login",
        &["Origin: https://evil.example".into()],
        Some(&format!("key={key}")),
    );
    assert_eq!(code, 403, "{page}");
    let (code, page) = a.log_in(&l);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Logged in"), "{page}");
    let (code, me) = a.whoami();
    assert_eq!(code, 200, "{me}");
    assert!(me.contains("\"user alice\"") && me.contains("\"user\""), "{me}");
    // Once only.
    let other = Curl::new(&web, d.path(), "other");
    let (code, page) = other.log_in(&l);
    assert_eq!(code, 403, "{page}");
    assert!(page.contains("used already"), "{page}");

    // A change needs the page's token and origin; with them, alice acts as her CLI would.
    let id = running_task(&alice, &["--no-container", "--", "sleep", "300"]);
    let kill = format!("/api/tasks/{id}/kill");
    let (code, body) = a.call("POST", &kill, &[], None);
    assert_eq!(code, 403, "no token: {body}");
    let (code, body) = a.call(
        "POST",
        &kill,
        &[
            format!("X-River-CSRF: {}", a.token()),
            "Origin: https://evil.example".into(),
        ],
        None,
    );
    assert_eq!(code, 403, "another site: {body}");
    assert!(body.contains("did not come from the dashboard's own page"), "{body}");
    let ws = [
        "Connection: Upgrade".to_owned(),
        "Upgrade: websocket".into(),
        "Sec-WebSocket-Version: 13".into(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
        "Origin: https://evil.example".into(),
    ];
    let (code, body) = a.call("GET", &format!("/api/tasks/{id}/terminal"), &ws, None);
    assert_eq!(code, 403, "a terminal opened from another site: {body}");
    let (code, body) = a.change("POST", &kill);
    assert_eq!(code, 200, "{body}");

    // Bob cannot see or end alice's sessions; she can see hers.
    let listed = river(&alice, &["-o", "json", "ui", "sessions"]);
    let sessions: serde_json::Value = serde_json::from_str(&text(&listed).0).unwrap();
    let sid = sessions[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert_eq!(sessions[0]["address"], "127.0.0.1");
    assert!(
        sessions[0]["agent"].as_str().unwrap().starts_with("curl/"),
        "{sessions}"
    );
    let o = river(&bob, &["ui", "revoke", &sid]);
    assert!(
        !o.status.success() && text(&o).1.contains("no live dashboard session"),
        "{:?}",
        text(&o)
    );
    let o = river(&bob, &["ui", "sessions", "--user", "alice"]);
    assert!(
        !o.status.success() && text(&o).1.contains("only operators and admins"),
        "{:?}",
        text(&o)
    );

    // A link asked for with a viewer's API token logs in as a viewer: it never does more.
    let o = river(&alice, &["user", "token", "create", "--name", "ro", "--role", "viewer"]);
    let token = text(&o).0.trim().to_owned();
    let made = Command::new("curl")
        .args(["-s", "-m", "30", "--cacert"])
        .arg(alice.join("ca.crt"))
        .args(["-X", "POST", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "https://localhost:{}/api/me/login-link",
            web.listen.rsplit_once(':').unwrap().1
        ))
        .output()
        .unwrap();
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let ro = Curl::new(&web, d.path(), "viewer");
    let (code, _) = ro.log_in(made["url"].as_str().unwrap());
    assert_eq!(code, 200);
    let (_, me) = ro.whoami();
    assert!(me.contains("\"viewer\""), "{me}");
    let id2 = running_task(&alice, &["--no-container", "--", "sleep", "300"]);
    let (code, body) = ro.change("POST", &format!("/api/tasks/{id2}/kill"));
    assert_eq!(code, 403, "a viewer's session killed a task: {body}");
}

#[test]
fn a_session_ends_by_itself_when_its_lifetime_is_up() {
    let d = tempfile::tempdir().unwrap();
    let web = web_host(d.path(), "session_lifetime = \"5s\"\n");
    let alice = person(d.path(), &web.admin, &web.listen, "alice", "user");
    let a = Curl::new(&web, d.path(), "alice");
    assert_eq!(a.log_in(&link(&alice)).0, 200);
    let (code, me) = a.whoami();
    assert_eq!(code, 200, "{me}");
    until(WAIT, "alice's session expires", || a.whoami().0 == 401);
    let (_, body) = a.whoami();
    assert!(body.contains("session has ended"), "{body}");
    assert!(river(&alice, &["-o", "json", "ui", "sessions"])
        .stdout
        .starts_with(b"[]"));
}

#[test]
fn a_revoked_or_disabled_session_loses_what_it_has_open_and_its_next_request() {
    let d = tempfile::tempdir().unwrap();
    let web = web_host(d.path(), "");
    let bob = person(d.path(), &web.admin, &web.listen, "bob", "user");
    let b = Curl::new(&web, d.path(), "bob");
    assert_eq!(b.log_in(&link(&bob)).0, 200);

    // The event stream it follows is cut (an error, not a clean end) when the session is revoked.
    let events = |c: &Curl| {
        Command::new("curl")
            .args(["-s", "-N", "-m", "120", "--cacert"])
            .arg(&c.web.cert)
            .arg("-b")
            .arg(&c.jar)
            .arg(format!("{}/api/events", c.origin()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut open = events(&b);
    let lines = lines_of(open.stdout.take().unwrap());
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "event: hello");
    let o = river(&bob, &["ui", "revoke", "--all"]);
    assert!(
        o.status.success() && text(&o).0.contains("ended dashboard session"),
        "{:?}",
        text(&o)
    );
    let mut ended = None;
    until(WAIT, "the event stream ends", || {
        ended = open.try_wait().unwrap();
        ended.is_some()
    });
    assert!(!ended.unwrap().success(), "the stream ended as if complete");
    let (code, body) = b.whoami();
    assert_eq!(code, 401, "{body}");
    assert!(river(&bob, &["-o", "json", "ui", "sessions"]).stdout.starts_with(b"[]"));

    // Disabling bob ends his new session too, and says why.
    assert_eq!(b.log_in(&link(&bob)).0, 200);
    let mut open = events(&b);
    let lines = lines_of(open.stdout.take().unwrap());
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "event: hello");
    let o = river(&web.admin, &["user", "disable", "bob"]);
    assert!(o.status.success(), "{:?}", text(&o));
    until(WAIT, "the event stream ends", || open.try_wait().unwrap().is_some());
    let (code, body) = b.whoami();
    assert_eq!(code, 401);
    assert!(body.contains("disabled"), "{body}");
}

#[test]
fn a_browser_logs_in_with_the_printed_link_sees_the_cluster_and_is_logged_out_by_a_revoke() {
    if !browser_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let web = web_host(d.path(), "");
    let _runner = runner_process(d.path(), &web.admin, &web.listen, "n1");
    let alice = person(d.path(), &web.admin, &web.listen, "alice", "user");
    let driver = Driver::start(free_port());
    // The lab's browsers trust its certificate; this one is told to trust exactly its key.
    let trust = format!("--ignore-certificate-errors-spki-list={}", web.spki);
    let b = driver.browser_with(&[&trust]);

    let l = link(&alice);
    b.go(&l);
    b.wait_text("#login", WAIT, |t| t == "Log in");
    if let Ok(dir) = std::env::var("RIVER_WEB_SCREENSHOTS") {
        b.screenshot(&Path::new(&dir).join("login.png"));
    }
    b.click("#login");
    b.wait_text("#live", WAIT, |t| t == "live");
    assert_eq!(b.url(), format!("https://localhost:{}/", web.port));
    assert_eq!(b.text("#me").unwrap(), "alice (user)");
    b.wait_text("tr[data-node='n1']", WAIT, |t| t.contains("online"));

    // The session's cookie is out of the page's reach, sent only over HTTPS and only by this site.
    let cookies = b.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "__Host-river_session")
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Strict");
    let seen_by_script = b.run("done(document.cookie)");
    assert!(!seen_by_script.as_str().unwrap().contains("river_session"));

    // The link worked once.
    let other = driver.browser_with(&[&trust]);
    other.go(&l);
    other.click("#login");
    other.wait_text("body", WAIT, |t| t.contains("used already"));
    drop(other);

    // The page's own changes carry its token; a forged one is refused.
    let forged = b.run("fetch('/api/me/sessions/x', { method: 'DELETE' }).then(r => done(r.status))");
    assert_eq!(forged, 403);

    // The account page lists this browser; revoking it from the CLI logs the page out at once.
    b.go(&format!("https://localhost:{}/#/account", web.port));
    let row = b.wait_text("#web-sessions tbody tr", WAIT, |t| t.contains("this browser"));
    let sessions: serde_json::Value =
        serde_json::from_slice(&river(&alice, &["-o", "json", "ui", "sessions"]).stdout).unwrap();
    let id = sessions[0]["id"].as_str().unwrap().to_owned();
    assert!(row.contains(&id), "{row}");
    if let Ok(dir) = std::env::var("RIVER_WEB_SCREENSHOTS") {
        b.screenshot(&Path::new(&dir).join("account-sessions.png"));
    }
    b.go(&format!("https://localhost:{}/#/", web.port));
    b.wait_text("#live", WAIT, |t| t == "live");
    let o = river(&alice, &["ui", "revoke", &id]);
    assert!(o.status.success(), "{:?}", text(&o));
    b.wait_text("#live", WAIT, |t| t == "logged out");
    assert!(b.text("#view").unwrap().contains("session has ended"), "{}", b.source());
    b.go(&format!("https://localhost:{}/", web.port));
    assert!(b.text("body").unwrap().contains("Not logged in"), "{}", b.source());

    // Logging out from the page ends the session the same way.
    let l = link(&alice);
    b.go(&l);
    b.click("#login");
    b.wait_text("#live", WAIT, |t| t == "live");
    b.click("#logout");
    b.wait_text("body", WAIT, |t| t.contains("Not logged in"));
    assert!(river(&alice, &["-o", "json", "ui", "sessions"])
        .stdout
        .starts_with(b"[]"));
}

#[test]
fn an_invitation_accepted_in_a_browser_makes_the_account_once() {
    let d = tempfile::tempdir().unwrap();
    let web = web_host(d.path(), "");
    let o = river(
        &web.admin,
        &["user", "invite", "dave", "--role", "user", "--ttl", "10m"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let (invite, said) = text(&o);
    let invite = invite.trim().to_owned();
    assert!(said.contains("/login"), "{said}");
    let b = Curl::new(&web, d.path(), "dave");

    // The login page takes an invitation; its link asks before it is used.
    let (code, page) = b.call("GET", "/login", &[], None);
    assert_eq!(code, 200);
    assert!(page.contains("name=invite"), "{page}");
    let (code, page) = b.call("GET", &format!("/login?invite={invite}"), &[], None);
    assert_eq!(code, 200);
    assert!(page.contains("Accept the invitation"), "{page}");
    let post =
        |c: &Curl, origin: &str, body: &str| c.call("POST", "/login", &[format!("Origin: {origin}")], Some(body));
    let (code, page) = post(&b, "https://evil.example", &format!("invite={invite}"));
    assert_eq!(code, 403, "{page}");
    let (code, page) = post(&b, &b.origin(), &format!("invite={invite}"));
    assert_eq!(code, 200, "{page}");
    let (_, me) = b.whoami();
    assert!(me.contains("\"user dave\"") && me.contains("\"user\""), "{me}");
    let users = river(&web.admin, &["-o", "json", "user", "list"]);
    assert!(text(&users).0.contains("\"dave\""), "{:?}", text(&users));

    // Once: the same invitation again makes nothing, and a node's join token is no invitation.
    let again = Curl::new(&web, d.path(), "again");
    let (code, page) = post(&again, &again.origin(), &format!("invite={invite}"));
    assert_eq!(code, 403, "{page}");
    assert_eq!(again.whoami().0, 401);
    let o = river(&web.admin, &["token", "create", "--ttl", "10m"]);
    let node_token = text(&o).0.lines().next().unwrap().trim().to_owned();
    let (code, page) = post(&again, &again.origin(), &format!("invite={node_token}"));
    assert_eq!(code, 403);
    assert!(page.contains("not an invitation"), "{page}");
}
