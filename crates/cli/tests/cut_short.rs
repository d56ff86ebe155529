//! Output cut short is an error, never a clean end: a host and a runner as separate processes of
//! the real binary, the runner killed (`kill -9`) while a user follows a task's output and pulls
//! a large answer through `river forward`.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A task serving a 300 MB file over HTTP on port 8080, once it is ready; its id.
fn big_file_server(cfg: &std::path::Path) -> String {
    let serving = running_task(
        cfg,
        &[
            "--image",
            "river-test/busybox:1",
            "--",
            "sh",
            "-c",
            "mkdir /www && dd if=/dev/zero of=/www/big bs=1M count=300 2>/dev/null && echo ready && exec httpd -f -p 127.0.0.1:8080 -h /www",
        ],
    );
    until(Duration::from_secs(60), "the web server is ready", || {
        text(&river(cfg, &["task", "logs", &serving])).0.contains("ready")
    });
    serving
}

/// `river forward` to that server, and a request for the file whose first MiB has arrived (the
/// rest is read slowly, by the caller). "ready" is printed just before the server listens: a
/// request refused in between is asked again.
fn pull_big_file(cfg: &std::path::Path, task: &str) -> (std::process::Child, std::net::TcpStream) {
    let (fwd, local, _) = spawn_forward(cfg, &[task, "8080"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut web = std::net::TcpStream::connect(&local).unwrap();
        web.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        web.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
        let mut got = vec![0u8; 1 << 20];
        match web.read_exact(&mut got) {
            Ok(()) => return (fwd, web),
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the web server never answered through the forward: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads the rest: the transfer must end in a reset, with the file incomplete, never in a clean
/// end that looks like the whole file.
fn assert_reset(web: &mut std::net::TcpStream) {
    let mut got = vec![0u8; 1 << 20];
    let mut total = got.len();
    let ended = loop {
        match web.read(&mut got) {
            Ok(0) => break Ok(()),
            Ok(n) => total += n,
            Err(e) => break Err(e),
        }
    };
    assert!(
        total < 300 << 20,
        "the whole file arrived before the mesh broke; nothing was cut"
    );
    let e = ended.expect_err("a clean end after a broken transfer");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}

/// What a killed runner leaves behind: its containers and its self-bind of scratch (`nosuid`).
struct Leftovers(std::path::PathBuf, &'static str);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let found = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=river.node={}", self.1)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in found.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let under = self.0.to_string_lossy().into_owned();
        for m in mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&under))
        {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
    }
}

#[test]
fn a_runner_killed_mid_transfer_makes_logs_follow_and_forward_fail_loudly() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(d.path().to_owned(), "cut1");
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, cfg) = host_process(d.path(), &listen);
    let mut runner = runner_process(d.path(), &cfg, &listen, "cut1");

    let image = ["--image", "river-test/busybox:1", "--"];
    let counting = running_task(
        &cfg,
        &[
            &image[..],
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 100000 ]; do echo line $i; i=$((i+1)); sleep 0.01; done",
            ],
        ]
        .concat(),
    );
    let serving = big_file_server(&cfg);

    // A user follows the first task's output...
    let mut follow = Command::new(env!("CARGO_BIN_EXE_river"))
        .args(["task", "logs", "-f", &counting])
        .env("RIVER_CONFIG_DIR", &cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = lines_of(follow.stdout.take().unwrap());
    let follow_said = lines_of(follow.stderr.take().unwrap());
    let first = followed.recv_timeout(Duration::from_secs(60)).expect("output arrives");
    assert!(first.starts_with("line "), "{first}");
    // ...and pulls a 300 MB file through a forward, reading slowly.
    let (mut fwd, mut web) = pull_big_file(&cfg, &serving);

    // The node dies.
    let _ = runner.0.kill();
    let _ = runner.0.wait();

    // The forward's client sees the connection reset, not a short file that looks complete.
    assert_reset(&mut web);

    // `logs -f` fails and says why.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = follow.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "logs -f still running after its node died");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "logs -f exited 0 with output cut short");
    // All it wrote: the reader thread may not have caught up with its exit yet; it ends at EOF.
    let said: Vec<String> = follow_said.iter().collect();
    assert!(said.join("\n").contains("was cut short"), "{said:?}");

    let _ = fwd.kill();
    let _ = fwd.wait();
}

#[test]
fn a_host_killed_mid_transfer_resets_the_forwarded_connection() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let _leftovers = Leftovers(d.path().to_owned(), "cut2");
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &cfg, &listen, "cut2");
    let serving = big_file_server(&cfg);
    let (mut fwd, mut web) = pull_big_file(&cfg, &serving);
    // The host dies: the forward's mesh connection breaks (noticed by the idle timeout).
    let _ = host.0.kill();
    let _ = host.0.wait();
    assert_reset(&mut web);
    let _ = fwd.kill();
    let _ = fwd.wait();
}

/// Bytes `path` takes on disk (a file with holes takes less than its length).
fn on_disk(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

#[test]
fn a_task_writing_without_end_keeps_the_last_part_of_its_output_and_says_so() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process_with(d.path(), &cfg, &listen, "cap", "task_output_limit = \"2M\"\n");
    let tasks = d.path().join("runner-cap").join("tasks");
    // 40 MB of numbered lines, then a last line, then a pause to look at the disk while it runs.
    let pad = "x".repeat(200);
    let script = format!("seq 1 200000 | sed 's/$/ {pad}/'; echo THE-END; sleep 300");
    let mut kinds = vec![("container", vec!["--image", "river-test/busybox:1"])];
    if river_cli_root() {
        kinds.push(("process", vec!["--no-container"]));
    }
    for (kind, args) in kinds {
        let mut all = args.clone();
        all.extend(["--", "sh", "-c", &script]);
        let id = running_task(&cfg, &all);
        // Its last line kept (stdout and stderr reach the node apart: a line on stderr written
        // after stdout's last one may come first).
        until(Duration::from_secs(120), "the task has written it all", || {
            text(&river(&cfg, &["task", "logs", &id])).0.ends_with("THE-END\n")
        });
        // What the node keeps of it on disk stays near the cap, not 40 MB.
        let log = tasks.join(&id).join("stdout.log");
        until(Duration::from_secs(30), "the output is trimmed", || {
            on_disk(&log) <= 3 << 20
        });
        // `task logs` starts by saying what was dropped, then the last part, whole to its end.
        let o = river(&cfg, &["task", "logs", &id]);
        assert!(o.status.success(), "{:?}", text(&o).1);
        let out = text(&o).0;
        let first = out.lines().next().unwrap();
        assert!(
            first.starts_with("[river: the first") && first.contains("were dropped"),
            "{kind}: {first}"
        );
        assert!(
            out.ends_with(&format!("200000 {pad}\nTHE-END\n")),
            "{kind}: ends {:?}",
            &out[out.len() - 40..]
        );
        assert!(
            out.len() <= (2 << 20) + 200 && out.len() >= 1 << 20,
            "{kind}: {} bytes kept",
            out.len()
        );
        // The kept part is whole lines, from where it starts to the end, none missing.
        let numbers: Vec<u64> = out
            .lines()
            .skip(2)
            .take_while(|l| *l != "THE-END")
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{kind}: a gap in what was kept"
        );
        assert!(river(&cfg, &["task", "kill", &id]).status.success());
    }
}

/// Whether this test runs as root (process tasks need it), else says it skips that part.
fn river_cli_root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        eprintln!("process tasks skipped: not root");
    }
    root
}
