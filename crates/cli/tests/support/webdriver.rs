//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over
//! WebDriver (the W3C protocol `chromedriver` speaks, plain JSON over HTTP on loopback).
#![allow(dead_code)] // each test file uses some of it

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` on a port of its own; killed when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether chromium and chromedriver are here; without them (and without RIVER_REQUIRE_BROWSER)
/// the caller skips.
pub fn browser_ready() -> bool {
    let ok = Path::new("/usr/bin/chromium").exists() && which("chromedriver");
    if !ok {
        assert!(
            std::env::var_os("RIVER_REQUIRE_BROWSER").is_none(),
            "chromium and chromedriver are required here (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: no chromium/chromedriver");
    }
    ok
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Driver {
    pub fn start(port: u16) -> Self {
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Self { child, port };
        let start = Instant::now();
        while d.call("GET", "/status", None).is_err_or_not_ready() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "chromedriver did not get ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    /// A new headless browser window.
    pub fn browser(&self) -> Browser<'_> {
        self.browser_with(&[])
    }

    /// A new headless browser window, started with `extra` command-line switches too.
    pub fn browser_with(&self, extra: &[&str]) -> Browser<'_> {
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--no-first-run",
            "--no-default-browser-check",
        ];
        args.extend_from_slice(extra);
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let v = self.call("POST", "/session", Some(caps)).expect("a browser session");
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        Browser { driver: self, id }
    }

    /// One WebDriver call: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open: read the head, then as much as it says.
        let mut raw = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let json = loop {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match length {
                    Some(len) if rest.len() >= len => break rest[..len].to_owned(),
                    None if head.contains("transfer-encoding: chunked") && rest.contains("\r\n0\r\n") => {
                        break unchunk(rest)
                    }
                    _ => {}
                }
            }
            if n == 0 {
                return Err(format!("the answer ended early: {text}"));
            }
        };
        let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))?;
        if v["value"]["error"].is_string() {
            return Err(format!("{}: {}", v["value"]["error"], v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }
}

fn unchunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

trait Ready {
    fn is_err_or_not_ready(&self) -> bool;
}

impl Ready for Result<serde_json::Value, String> {
    fn is_err_or_not_ready(&self) -> bool {
        !matches!(self, Ok(v) if v["ready"] == true)
    }
}

/// One browser window.
pub struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.driver.call("DELETE", &format!("/session/{}", self.id), None);
    }
}

impl Browser<'_> {
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, String> {
        self.driver.call(method, &format!("/session/{}{path}", self.id), body)
    }

    pub fn go(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({ "url": url })))
            .expect("the page loads");
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements `css` selects now.
    pub fn all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                "POST",
                "/elements",
                Some(serde_json::json!({ "using": "css selector", "value": css })),
            )
            .unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The visible text of the first element `css` selects, if there is one.
    pub fn text(&self, css: &str) -> Option<String> {
        let e = self.all(css).into_iter().next()?;
        let v = self.call("GET", &format!("/element/{e}/text"), None).ok()?;
        v.as_str().map(str::to_owned)
    }

    /// Waits until the first element `css` selects has text `check` accepts; that text.
    pub fn wait_text(&self, css: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(t) = self.text(css).filter(|t| check(t)) {
                return t;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {css}; it reads {:?}; the page: {}",
                self.text(css),
                self.text("body").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.all(css).into_iter().next().unwrap_or_else(|| panic!("no {css}"));
        self.call("POST", &format!("/element/{e}/clear"), Some(serde_json::json!({})))
            .unwrap();
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(serde_json::json!({ "text": text })),
        )
        .unwrap();
    }

    /// Keys typed into the element `css` selects, as it is (nothing cleared first).
    pub fn type_keys(&self, css: &str, keys: &str) {
        let e = self.all(css).into_iter().next().unwrap_or_else(|| panic!("no {css}"));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(serde_json::json!({ "text": keys })),
        )
        .unwrap();
    }

    /// Accepts the `confirm()` dialog the page shows now, waiting for it a while.
    pub fn accept_dialog(&self) {
        let start = Instant::now();
        while let Err(e) = self.call("POST", "/alert/accept", Some(serde_json::json!({}))) {
            assert!(start.elapsed() < Duration::from_secs(30), "no dialog to accept: {e}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn click(&self, css: &str) {
        let e = self.all(css).into_iter().next().unwrap_or_else(|| panic!("no {css}"));
        self.call("POST", &format!("/element/{e}/click"), Some(serde_json::json!({})))
            .unwrap();
    }

    /// Runs `script` (an async function body; `done(value)` ends it) in the page; its value.
    pub fn run(&self, script: &str) -> serde_json::Value {
        let body = format!("const done = arguments[arguments.length - 1]; {script}");
        self.call(
            "POST",
            "/execute/async",
            Some(serde_json::json!({ "script": body, "args": [] })),
        )
        .expect("the script runs")
    }

    /// The cookies the browser holds for the page's site, as WebDriver describes them
    /// (`name`, `value`, `httpOnly`, `secure`, `sameSite`, …).
    pub fn cookies(&self) -> Vec<serde_json::Value> {
        self.call("GET", "/cookie", None)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Resizes the window, as a user drags its corner.
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(serde_json::json!({ "width": width, "height": height })),
        )
        .expect("the window resizes");
    }

    /// The page's HTML as it is now.
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the window, into `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let v = self.call("GET", "/screenshot", None).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}
