//! The web dashboard in a real browser (headless chromium over WebDriver, as the tests drive it):
//! what its first load transfers and how soon it is interactive and drawn, beside a static file
//! of the same host through the same `river ui`; how soon a change on the host shows on the page
//! (a kill from the CLI, to the row leaving the page); and the task list's first page with N
//! tasks in the database, beside a new cluster's. The first load is measured at the host's own
//! address too (`[web]`: HTTPS with a lab certificate, a browser logged in by `river ui --link`).

#[path = "../../crates/cli/tests/support/labcert.rs"]
mod labcert;
#[path = "../../crates/cli/tests/support/webdriver.rs"]
mod webdriver;

use crate::proc::{host, host_with, runner};
use labcert::lab_certificate;
use river_proto::msg::{Assigned, TaskSpec};
use river_store::prelude::*;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webdriver::{Browser, Driver};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `river ui --no-open` for the credentials in `admin`: the process and its link.
fn ui(river: &Path, admin: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(river)
        .args(["ui", "--no-open"])
        .env("RIVER_CONFIG_DIR", admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut link = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut link)?;
    Ok((child, link.trim().to_owned()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9515)
}

/// Navigation timing of the page now loaded: (bytes of every body, interactive ms, loaded ms).
fn timing(b: &Browser) -> (f64, f64, f64) {
    let v = b.run(
        "const n = performance.getEntriesByType('navigation')[0];
         const r = performance.getEntriesByType('resource').filter(e => !e.name.includes('/api/'));
         done([n.encodedBodySize + r.reduce((s, e) => s + e.encodedBodySize, 0), n.domInteractive, n.responseEnd]);",
    );
    (
        v[0].as_f64().unwrap_or(0.0),
        v[1].as_f64().unwrap_or(0.0),
        v[2].as_f64().unwrap_or(0.0),
    )
}

/// Reloads `url` and waits (in the page) until `css` is there: ms since the navigation began.
fn drawn_after_load(b: &Browser, url: &str, css: &str) -> f64 {
    b.go(url);
    let script = format!(
        "const f = () => document.querySelector({css:?}) ? done(performance.now()) : requestAnimationFrame(f); f();"
    );
    b.run(&script).as_f64().unwrap_or(f64::NAN)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// The first load at the host's own address: logged in with a `river ui --link` link, then the
/// same measures as through `river ui`.
fn own_address(b: &Browser, river: &Path, admin: &Path, port: u16, runs: usize) -> anyhow::Result<()> {
    let out = Command::new(river)
        .args(["ui", "--link"])
        .env("RIVER_CONFIG_DIR", admin)
        .output()?;
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(
        link.contains("/login?key="),
        "river ui --link: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.go(&link);
    b.click("#login");
    b.wait_text("#live", Duration::from_secs(60), |t| t == "live");
    let base = format!("https://localhost:{port}");
    let (mut bytes, mut interactive, mut drawn, mut statik) = (0.0, Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        drawn.push(drawn_after_load(
            b,
            &format!("{base}/?r={}", now_ms()),
            "#nodes tr[data-node]",
        ));
        let (n, i, _) = timing(b);
        bytes = n;
        interactive.push(i);
        b.go(&format!("{base}/ui/style.css?r={}", now_ms()));
        statik.push(timing(b).2);
    }
    println!("  at the host's own address (HTTPS, a lab certificate, a browser session):");
    println!("    first load, bytes                {:8.1} KB", bytes / 1024.0);
    println!("    interactive (domInteractive)     {:8.1} ms", median(interactive));
    println!("    overview drawn                   {:8.1} ms", median(drawn));
    println!("    a static file (style.css)        {:8.1} ms", median(statik));
    Ok(())
}

pub async fn run(river: &Path, runs: usize, tasks: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key, spki) = lab_certificate(dir.path())?;
    let web_port = free_port();
    let web = format!(
        "[web]\nlisten = \"127.0.0.1:{web_port}\"\ncert = {cert:?}\nkey = {key:?}\nurl = \"https://localhost:{web_port}\"\n"
    );
    let (_host, bundle, addr) = host_with(river, dir.path(), Duration::from_secs(5), &web).await?;
    let _runner = runner(river, dir.path(), &bundle, addr, "bench").await?;
    let admin = dir.path().join("host/admin");
    let (mut ui_proc, link) = ui(river, &admin)?;
    let base = link.split("/login").next().unwrap_or_default().to_owned();
    let driver = Driver::start(free_port());
    let trust = format!("--ignore-certificate-errors-spki-list={spki}");
    let b = driver.browser_with(&[&trust]);
    b.go(&link);
    b.wait_text("#live", Duration::from_secs(60), |t| t == "live");

    // First load: the dashboard (and its overview drawn from the API), against a static file.
    let (mut bytes, mut interactive, mut drawn, mut statik) = (0.0, Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        drawn.push(drawn_after_load(
            &b,
            &format!("{base}/?r={}", now_ms()),
            "#nodes tr[data-node]",
        ));
        let (n, i, _) = timing(&b);
        bytes = n;
        interactive.push(i);
        b.go(&format!("{base}/ui/style.css?r={}", now_ms()));
        statik.push(timing(&b).2);
    }
    println!("web: {runs} loads each, medians (Chromium, loopback, through `river ui`)");
    println!(
        "  first load, bytes (html, css, js)  {:8.1} KB   (goal: at most 300 KB)",
        bytes / 1024.0
    );
    println!(
        "  interactive (domInteractive)       {:8.1} ms   (goal: at most 300 ms)",
        median(interactive)
    );
    println!("  overview drawn (nodes from the API){:8.1} ms", median(drawn));
    println!(
        "  a static file (style.css), loaded  {:8.1} ms   (baseline: same host, same relay)",
        median(statik)
    );
    own_address(&b, river, &admin, web_port, runs)?;

    // A change on the host, seen on the page: a task killed from the CLI, until its row goes.
    let mut seen = Vec::new();
    for _ in 0..runs {
        let out = Command::new(river)
            .args(["task", "submit", "--no-container", "--", "sleep", "300"])
            .env("RIVER_CONFIG_DIR", &admin)
            .output()?;
        let id: String = String::from_utf8_lossy(&out.stdout)
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        anyhow::ensure!(!id.is_empty(), "submit: {}", String::from_utf8_lossy(&out.stderr));
        b.go(&format!("{base}/#/"));
        b.wait_text(&format!("#active tr[data-task='{id}']"), Duration::from_secs(60), |t| {
            t.contains("running")
        });
        let river = river.to_owned();
        let admin = admin.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let ok = Command::new(&river)
                .args(["task", "kill", &id])
                .env("RIVER_CONFIG_DIR", &admin)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (ok, now_ms())
        });
        let script = "const f = () => document.querySelector('#active tr[data-task]') ? requestAnimationFrame(f) : done(Date.now()); f();";
        let gone = b.run(script).as_f64().unwrap_or(f64::NAN);
        let (ok, killed) = killer.join().expect("the kill thread");
        anyhow::ensure!(ok, "river task kill failed");
        seen.push(gone - killed);
    }
    println!(
        "  a kill seen on the page            {:8.1} ms   after `river task kill` returned (goal: at most 500 ms)",
        median(seen)
    );

    // The task list with many tasks in the database, against the same page on this cluster.
    let small = median(
        (0..runs)
            .map(|_| drawn_after_load(&b, &format!("{base}/?r={}#/tasks", now_ms()), "#tasks"))
            .collect(),
    );
    let _ = ui_proc.kill();
    let full = tempfile::tempdir()?;
    let (h1, _, _) = host(river, full.path(), Duration::from_secs(5)).await?;
    drop(h1);
    {
        let store = river_store::Store::open(&full.path().join("host/river.db")).await?;
        let spec = TaskSpec::new(
            "river-test/busybox:1",
            vec!["sh".into(), "-c".into(), "echo done".into()],
        );
        let none = Assigned::default();
        let batch: Vec<_> = (0..1000).map(|_| (&spec, &none, None)).collect();
        for _ in 0..tasks.div_ceil(1000) {
            store.insert_batch("user admin", &batch, 0).await?;
        }
        store.close().await;
    }
    let (_h1, _, _) = host(river, full.path(), Duration::from_secs(5)).await?;
    let (mut ui_full, link) = ui(river, &full.path().join("host/admin"))?;
    let base = link.split("/login").next().unwrap_or_default().to_owned();
    let b = driver.browser();
    b.go(&link);
    b.wait_text("#live", Duration::from_secs(60), |t| t == "live");
    let big = median(
        (0..runs)
            .map(|_| drawn_after_load(&b, &format!("{base}/?r={}#/tasks", now_ms()), "#tasks"))
            .collect(),
    );
    println!(
        "  task list drawn, {:>6} tasks       {big:8.1} ms   (this cluster's few: {small:.1} ms; pages of 50)",
        tasks.div_ceil(1000) * 1000
    );
    let _ = ui_full.kill();
    Ok(())
}
