//! Reaching into a task: `river forward` and `river ssh` against direct access and OpenSSH in the
//! same run. A real host and runner (separate processes) run a task from the `river-test/sshd`
//! image; an iperf3 server and an echo server (this binary, `echo-server`) run inside the task's
//! network namespace. Baselines: the same servers reached directly, and through `ssh -L` to the
//! task's own sshd (OpenSSH's default cipher).

use crate::proc::{admin_call, host, runner, until};
use river_proto::msg::{Request, Response, TaskSpec};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "river-test/sshd:2";
const ECHO_PORT: u16 = 7000;
const IPERF_PORT: u16 = 5201;

/// Runs an echo server on `port` of every address (for `nsenter … river-bench echo-server`).
pub fn echo_server(port: u16) -> anyhow::Result<()> {
    let l = std::net::TcpListener::bind(("0.0.0.0", port))?;
    for s in l.incoming() {
        let mut s = s?;
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// iperf3 to `port` on loopback (through `prefix`, e.g. `nsenter …`); Gbit/s received.
fn iperf(prefix: &[&str], port: u16, streams: u32, reverse: bool) -> anyhow::Result<f64> {
    let port = port.to_string();
    let streams = streams.to_string();
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend([
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "5",
        "-J",
        "-P",
        &streams,
    ]);
    if reverse {
        args.push("-R");
    }
    let o = Command::new(args[0]).args(&args[1..]).output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow::anyhow!("iperf3 gave no result: {}", String::from_utf8_lossy(&o.stdout)))
}

fn echo_once(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
}

/// New connection + first echoed byte, `n` times: p50 and p99 in µs.
fn connect_echo(addr: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        echo_once(&mut s)?;
        t.push(us(start.elapsed()));
    }
    Ok((pct(&mut t, 0.5), pct(&mut t, 0.99)))
}

/// 1-byte round trips on one connection: p50 and p99 in µs.
fn round_trips(addr: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    for _ in 0..100 {
        echo_once(&mut s)?;
    }
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        echo_once(&mut s)?;
        t.push(us(start.elapsed()));
    }
    Ok((pct(&mut t, 0.5), pct(&mut t, 0.99)))
}

/// Latency against one echo server, printed.
pub fn latency(addr: &str) -> anyhow::Result<()> {
    let (c50, c99) = connect_echo(addr, 500)?;
    let (r50, r99) = round_trips(addr, 2000)?;
    println!("new connection + first echo p50 {c50:.0} µs, p99 {c99:.0} µs; 1-byte round trip p50 {r50:.0} µs, p99 {r99:.0} µs");
    Ok(())
}

fn wait_port(addr: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[allow(clippy::too_many_lines)]
pub async fn run(river: &Path, hold: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_host, admin, addr) = host(river, dir.path(), Duration::from_secs(5)).await?;
    let _runner = runner(river, dir.path(), &admin, addr, "bench").await?;
    let cfg = dir.path().join("host/admin");
    let key = dir.path().join("key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()?;
    anyhow::ensure!(made.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let mut spec = TaskSpec::new(
        IMAGE,
        vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /root/.ssh && echo \"$KEY\" > /root/.ssh/authorized_keys && exec /usr/sbin/sshd -D -e".into(),
        ],
    );
    spec.env.push(("KEY".into(), public.trim().into()));
    let Response::TaskSubmitted { ids, .. } = admin_call(&admin, Request::TaskSubmit(spec)).await? else {
        anyhow::bail!("submit refused (is {IMAGE} built? scripts/docker-env.sh)")
    };
    let id = ids[0];
    wait_running(&admin, id).await?;
    // A VPS on the same image whose SSH the runner serves (the image's sshd is not used).
    let mut vps = TaskSpec::new(IMAGE, Vec::new());
    vps.vps = Some(river_proto::msg::VpsSpec {
        ssh_keys: vec![public.trim().to_owned()],
        image_sshd: false,
        generation: 0,
    });
    let Response::TaskSubmitted { ids, .. } = admin_call(&admin, Request::TaskSubmit(vps)).await? else {
        anyhow::bail!("VPS refused")
    };
    let vps_id = ids[0];
    wait_running(&admin, vps_id).await?;
    let Response::Status(st) = admin_call(&admin, Request::Status).await? else {
        anyhow::bail!("no status")
    };
    let name = format!("river-{}-bench-task-{id}", &st.ca_fingerprint[..8]);
    let inspect = |f: &str| -> anyhow::Result<String> {
        let o = Command::new("docker").args(["inspect", "-f", f, &name]).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let pid = inspect("{{.State.Pid}}")?;
    let ip = inspect("{{.NetworkSettings.IPAddress}}")?;
    let ns = ["nsenter", "-t", pid.as_str(), "-n"];

    // Servers inside the task's network namespace.
    let me = std::env::current_exe()?;
    let _echo = Killed(
        Command::new("nsenter")
            .args(["-t", &pid, "-n"])
            .arg(&me)
            .args(["echo-server", &ECHO_PORT.to_string()])
            .spawn()?,
    );
    let _iperf = Killed(
        Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "-n",
                "iperf3",
                "-s",
                "-B",
                "127.0.0.1",
                "-p",
                &IPERF_PORT.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let direct_echo = format!("{ip}:{ECHO_PORT}");
    wait_port(&direct_echo)?;

    // river forward, one per port.
    let forward = |port: u16, local: u16| -> anyhow::Result<Killed> {
        Ok(Killed(
            Command::new(river)
                .arg("--config-dir")
                .arg(&cfg)
                .args(["forward", &id.to_string(), &port.to_string(), "-l", &local.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    };
    let (r_iperf, r_echo) = (free_port(), free_port());
    let _f1 = forward(IPERF_PORT, r_iperf)?;
    let _f2 = forward(ECHO_PORT, r_echo)?;
    let river_echo = format!("127.0.0.1:{r_echo}");
    wait_port(&river_echo)?;
    wait_port(&format!("127.0.0.1:{r_iperf}"))?;

    // ssh -L to the task's own sshd, straight over the Docker bridge.
    let (s_iperf, s_echo) = (free_port(), free_port());
    let quiet = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
    ];
    let _ssh = Killed(
        Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args(quiet)
            .args(["-N", "-L", &format!("{s_iperf}:127.0.0.1:{IPERF_PORT}")])
            .args(["-L", &format!("{s_echo}:127.0.0.1:{ECHO_PORT}")])
            .arg(format!("root@{ip}"))
            .spawn()?,
    );
    let ssh_echo = format!("127.0.0.1:{s_echo}");
    until(Duration::from_secs(20), "ssh -L", || connect_echo(&ssh_echo, 1).is_ok()).await?;
    if hold {
        println!(
            "iperf3: direct `{} iperf3 -c 127.0.0.1 -p {IPERF_PORT}`, ssh -L {s_iperf}, river {r_iperf}",
            ns.join(" ")
        );
        println!("echo: direct {direct_echo}, ssh -L {ssh_echo}, river {river_echo}");
        println!("holding; interrupt to end");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    println!("### Throughput (iperf3, 5 s, Gbit/s)\n");
    println!("| path | 1 stream | 4 streams | 1 stream, reverse |");
    println!("|---|---|---|---|");
    for (what, prefix, port) in [
        ("direct (loopback inside the task)", &ns[..], IPERF_PORT),
        ("`ssh -L` (OpenSSH, default cipher)", &[][..], s_iperf),
        ("`river forward` (through the host)", &[][..], r_iperf),
    ] {
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            iperf(prefix, port, 1, false)?,
            iperf(prefix, port, 4, false)?,
            iperf(prefix, port, 1, true)?
        );
    }

    println!("\n### Latency (µs)\n");
    println!("| path | new connection + first echo p50 | p99 | 1-byte round trip p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (what, addr) in [
        ("direct (container address)", &direct_echo),
        ("`ssh -L`", &ssh_echo),
        ("`river forward`", &river_echo),
    ] {
        let (c50, c99) = connect_echo(addr, 500)?;
        let (r50, r99) = round_trips(addr, 2000)?;
        println!("| {what} | {c50:.0} | {c99:.0} | {r50:.0} | {r99:.0} |");
    }

    // Cold start: from running `river forward` to the first echoed byte.
    let mut cold = Vec::new();
    for _ in 0..5 {
        let local = free_port();
        let addr = format!("127.0.0.1:{local}");
        let start = Instant::now();
        let _f = forward(ECHO_PORT, local)?;
        loop {
            if let Ok(mut s) = TcpStream::connect(&addr) {
                if echo_once(&mut s).is_ok() {
                    break;
                }
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "forward never came up");
            std::thread::sleep(Duration::from_millis(1));
        }
        cold.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "\ncold start, `river forward` to the first echoed byte: p50 {:.0} ms (5 runs)",
        pct(&mut cold, 0.5)
    );

    // `river ssh ID true` against plain ssh to the same sshd.
    let time_runs = |cmd: &mut dyn FnMut() -> Command| -> anyhow::Result<f64> {
        let mut t = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            let mut c = cmd();
            let o = c.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
            anyhow::ensure!(
                o.status.success(),
                "{c:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            t.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(pct(&mut t, 0.5))
    };
    let plain = time_runs(&mut || {
        let mut c = Command::new("ssh");
        c.arg("-i").arg(&key).args(quiet).arg(format!("root@{ip}")).arg("true");
        c
    })?;
    let through = time_runs(&mut || {
        let mut c = Command::new(river);
        c.arg("--config-dir")
            .arg(&cfg)
            .args(["ssh", &id.to_string(), "-i"])
            .arg(&key)
            .args(quiet)
            .arg("true");
        c
    })?;
    let vps_ssh = time_runs(&mut || {
        let mut c = Command::new(river);
        c.arg("--config-dir")
            .arg(&cfg)
            .args(["ssh", &vps_id.to_string(), "-i"])
            .arg(&key)
            .args(quiet)
            .arg("true");
        c
    })?;
    // Plain OpenSSH through the host's SSH gateway, against `ssh -J` through a jump host that is
    // an sshd (the task's own, jumping to itself), same run.
    // Registered as a user does, the CLI proving the key is theirs.
    let added = Command::new(river)
        .arg("--config-dir")
        .arg(&cfg)
        .args(["user", "key", "add"])
        .arg(key.with_extension("pub"))
        .output()?;
    anyhow::ensure!(
        added.status.success(),
        "the key was refused: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let ssh_cfg = dir.path().join("ssh_config");
    std::fs::write(
        &ssh_cfg,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
            key.display()
        ),
    )?;
    let jump_sshd = time_runs(&mut || {
        let mut c = Command::new("ssh");
        // The sshd jumps to itself, at its own loopback.
        c.arg("-F")
            .arg(&ssh_cfg)
            .args(["-J", &format!("root@{ip}"), "root@127.0.0.1", "true"]);
        c
    })?;
    let gateway = time_runs(&mut || {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(&ssh_cfg)
            .args(["-J", &format!("river@{addr}"), &format!("root@vps-{vps_id}"), "true"]);
        c
    })?;
    println!("\n| `… true`, p50 of 10 | ms |\n|---|---|");
    println!("| `ssh root@<container>` (direct, the image's sshd) | {plain:.0} |");
    println!("| `river ssh ID` (through the host, the image's sshd) | {through:.0} |");
    println!("| `river ssh ID` to a VPS (through the host, SSH served by the runner) | {vps_ssh:.0} |");
    println!(
        "| `ssh -J root@<container> root@127.0.0.1` (the image's sshd as jump host, to itself) | {jump_sshd:.0} |"
    );
    println!("| `ssh -J river@HOST root@vps-ID` (river's gateway, then the runner's SSH) | {gateway:.0} |");

    // Interactive keystroke round trip: one byte typed into a remote terminal until its echo.
    let mut direct = Command::new("ssh");
    direct
        .arg("-F")
        .arg(&ssh_cfg)
        .args(["-tt", &format!("root@{ip}"), "cat"]);
    let mut vps = Command::new(river);
    vps.arg("--config-dir")
        .arg(&cfg)
        .args(["ssh", &vps_id.to_string(), "-i"])
        .arg(&key)
        .args(quiet)
        .args(["-tt", "cat"]);
    let mut via_gateway = Command::new("ssh");
    via_gateway.arg("-F").arg(&ssh_cfg).args([
        "-tt",
        "-J",
        &format!("river@{addr}"),
        &format!("root@vps-{vps_id}"),
        "cat",
    ]);
    println!("\n| keystroke → echo, 500 keys | p50 µs | p99 µs |\n|---|---|---|");
    for (what, cmd) in [
        ("`ssh -tt root@<container>` (direct, the image's sshd)", direct),
        ("`river ssh -tt VPS` (through the host, the runner's SSH)", vps),
        ("`ssh -tt -J river@HOST root@vps-ID` (gateway)", via_gateway),
    ] {
        let (p50, p99) = keystrokes(cmd, 500)?;
        println!("| {what} | {p50:.0} | {p99:.0} |");
    }
    Ok(())
}

/// Types `n` single keys into `cmd` (an ssh running `cat` on a remote terminal) and times each
/// until the terminal's echo comes back: p50 and p99 in µs.
fn keystrokes(mut cmd: Command, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut child = Killed(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut input = child.0.stdin.take().expect("piped");
    let mut output = child.0.stdout.take().expect("piped");
    let mut b = [0u8; 1];
    // Until the session is up: the first key's echo.
    input.write_all(b"k")?;
    output.read_exact(&mut b)?;
    let mut t = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let key = b'a' + (i % 26) as u8;
        let start = Instant::now();
        input.write_all(&[key])?;
        loop {
            output.read_exact(&mut b)?;
            if b[0] == key {
                break;
            }
        }
        if i >= 20 {
            t.push(us(start.elapsed()));
        }
    }
    Ok((pct(&mut t, 0.5), pct(&mut t, 0.99)))
}

/// Waits until task `id` runs; an error if it ends first or takes over 30 s.
async fn wait_running(admin: &river_creds::Bundle, id: u64) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Response::Task(t) = admin_call(admin, Request::TaskShow { id }).await? {
            let over = ["completed", "failed", "killed", "oom", "stopped"].contains(&t.state.as_str());
            anyhow::ensure!(!over, "task {id} {}: {:?}", t.state, t.message);
            if t.state == "running" {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("task {id} never ran")
}
