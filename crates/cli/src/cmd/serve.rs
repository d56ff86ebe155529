//! `river host`, `river runner`, `river up` and `river down`.

use crate::args::{DownArgs, HostArgs, HostCmd, RunnerArgs, UpArgs};
use crate::client::home;
use anyhow::{bail, Context as _};
use river_host::HostConfig;
use river_runner::RunnerConfig;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn host(a: HostArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => HostConfig::load(p)?,
        None => HostConfig::default(),
    };
    if let Some(d) = a.state_dir {
        cfg.state_dir = d;
    }
    match a.action {
        Some(HostCmd::Backup { file }) => {
            println!("{}", river_host::backup::create(&cfg.state_dir, &file).await?);
            return Ok(());
        }
        Some(HostCmd::Restore { file, force }) => {
            println!("{}", river_host::backup::restore(&file, &cfg.state_dir, force).await?);
            return Ok(());
        }
        None => {}
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if !a.advertise.is_empty() {
        cfg.advertise = a.advertise;
    }
    let mut host = river_host::start(cfg).await?;
    eprintln!(
        "river host: mesh on udp {}, HTTPS API on tcp {}",
        host.mesh_addr, host.api_addr
    );
    eprintln!("  CA fingerprint: {}", host.ca_fingerprint);
    eprintln!(
        "  admin credentials: {} (use with RIVER_CONFIG_DIR={})",
        host.admin_dir.display(),
        host.admin_dir.display()
    );
    tokio::select! {
        _ = shutdown_signal() => eprintln!("river host: shutting down"),
        _ = host.wait() => bail!("the host stopped serving"),
    }
    host.shutdown().await;
    Ok(())
}

pub async fn runner(a: RunnerArgs) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => RunnerConfig::load(p)?,
        None => RunnerConfig::default(),
    };
    if let Some(d) = a.state_dir {
        cfg.state_dir = d;
    }
    if a.name.is_some() {
        cfg.name = a.name;
    }
    let token = match (&a.token_file, a.token) {
        (Some(file), _) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("reading the join token from {}: {e}", file.display()))?
                .trim()
                .to_owned(),
        ),
        (None, token) => token,
    };
    if a.join.is_some() && token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "--join needs a token: `--token-file FILE` (or RIVER_JOIN_TOKEN) with one from `river token create` on the host"
        );
    }
    let join = a.join.as_deref().zip(token.as_deref());
    let bundle = river_runner::ensure_joined(&cfg, join).await?;
    let mut runner = river_runner::start(cfg, bundle);
    eprintln!("river runner: node {}", runner.name);
    tokio::select! {
        _ = shutdown_signal() => {
            eprintln!("river runner: shutting down");
            runner.shutdown().await;
            Ok(())
        }
        r = runner.wait() => r,
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn up_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        std::env::var_os("XDG_DATA_HOME")
            .filter(|x| !x.is_empty())
            .map_or_else(|| home().join(".local/share"), PathBuf::from)
            .join("river")
    })
}

const READY: &str = "river up: ready";

/// Where `river up` listens without a config or `--listen`: this machine only.
const DEFAULT_UP_LISTEN: &str = "127.0.0.1:7443";

pub async fn up(a: UpArgs, config_dir: &Path) -> anyhow::Result<()> {
    let dir = up_dir(a.state_dir.clone());
    if a.detach {
        return detach(&a, &dir);
    }
    river_creds::private_dir(&dir)?;
    let mut host_cfg = match &a.host_config {
        Some(file) => HostConfig::load(file)?,
        None => HostConfig {
            listen: DEFAULT_UP_LISTEN.parse().expect("a socket address"),
            ..Default::default()
        },
    };
    host_cfg.state_dir = dir.join("host");
    if let Some(listen) = a.listen {
        host_cfg.listen = listen;
    }
    if let Some(image) = &a.default_image {
        host_cfg.default_image = image.clone();
    }
    host_cfg.advertise.extend(a.advertise.iter().cloned());
    let loopback_only = host_cfg.listen.ip().is_loopback();
    let mut host = river_host::start(host_cfg).await?;
    let mut runner_cfg = match &a.runner_config {
        Some(file) => RunnerConfig::load(file)?,
        None => RunnerConfig::default(),
    };
    runner_cfg.state_dir = dir.join("runner");
    runner_cfg.name = Some(local_node_name());
    let identity = runner_cfg.state_dir.join("identity");
    let bundle = if river_creds::Bundle::exists(&identity) {
        // The local runner dials where the host is now, even if it was started elsewhere
        // before (another `--listen`): it is this cluster's own node.
        let here = if host.mesh_addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", host.mesh_addr.port())
        } else {
            host.mesh_addr.to_string()
        };
        let mut b = river_creds::Bundle::load(&identity)?;
        if b.meta.host != here {
            b.meta.host = here;
            b.save(&identity)?;
        }
        river_runner::ensure_joined(&runner_cfg, None).await?
    } else {
        let token = host.create_node_token(600, 1).await?;
        river_runner::ensure_joined(&runner_cfg, Some((&host.mesh_addr.to_string(), &token))).await?
    };
    let runner = river_runner::start(runner_cfg, bundle);
    let mut status = runner.status.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.connected || s.stopped.is_some()),
    )
    .await
    .context("the local runner did not connect within 30s")??;
    if let Some(reason) = status.borrow().stopped.clone() {
        bail!("the local runner stopped: {reason}");
    }
    let creds_note = install_admin(&host.admin_dir, config_dir)?;
    println!(
        "river is up: host on {} (mesh UDP, HTTPS TCP), node {} online",
        host.mesh_addr, runner.name
    );
    println!("  state:       {}", dir.display());
    println!("  credentials: {creds_note}");
    println!();
    println!("Try:");
    println!("  river status");
    println!("  river node list");
    if loopback_only {
        println!(
            "  (it listens on {} only: to let other machines join, start it with --listen 0.0.0.0:{} --advertise THIS-MACHINE)",
            host.mesh_addr.ip(),
            host.mesh_addr.port()
        );
    } else {
        println!(
            "  river token create          # then on another machine: RIVER_JOIN_TOKEN=TOKEN river runner --join {}",
            crate::client::host_address(&host.admin_dir)
        );
    }
    println!(
        "  curl --cacert {}/ca.crt https://127.0.0.1:{}/api/health",
        host.admin_dir.display(),
        host.api_addr.port()
    );
    println!();
    // In the background no terminal reaches it: only `river down` stops it.
    if std::env::var_os("RIVER_UP_DETACHED").is_some() {
        println!("Stop with `river down`.");
    } else {
        println!("Stop with Ctrl-C.");
    }
    println!("{READY}");
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = host.wait() => eprintln!("river up: the host stopped serving"),
    }
    runner.shutdown().await;
    host.shutdown().await;
    Ok(())
}

/// The node name for the local runner: the hostname when it is a valid name, else "local".
fn local_node_name() -> String {
    river_proto::name::Name::from_hostname(&river_inventory::hostname())
        .map_or_else(|_| "local".into(), |n| n.to_string())
}

/// Copies the admin credential where the CLI looks, unless credentials for another cluster are
/// already there. Returns a sentence saying where the CLI's credentials are.
fn install_admin(admin_dir: &Path, config_dir: &Path) -> anyhow::Result<String> {
    let admin = river_creds::Bundle::load(admin_dir)?;
    if river_creds::Bundle::exists(config_dir) {
        let mine = river_creds::Bundle::load(config_dir).ok();
        if mine.as_ref().is_some_and(|b| b.ca_pem != admin.ca_pem) {
            return Ok(format!(
                "{} holds another cluster's credentials; for this one run `export RIVER_CONFIG_DIR={}`",
                config_dir.display(),
                admin_dir.display()
            ));
        }
    }
    admin.save(config_dir)?;
    Ok(format!("{} (admin)", config_dir.display()))
}

/// Starts `river up` again in its own session, logging to the state directory, and returns
/// once it prints that it is ready.
fn detach(a: &UpArgs, dir: &Path) -> anyhow::Result<()> {
    river_creds::private_dir(dir)?;
    let pid_file = dir.join("river.pid");
    if let Some(pid) = running_pid(&pid_file) {
        bail!("river up is already running (pid {pid}); stop it with `river down`");
    }
    let log_path = dir.join("river.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let start = log.metadata()?.len();
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up").arg("--state-dir").arg(dir);
    for name in &a.advertise {
        cmd.arg("--advertise").arg(name);
    }
    if let Some(listen) = a.listen {
        cmd.arg("--listen").arg(listen.to_string());
    }
    if let Some(image) = &a.default_image {
        cmd.arg("--default-image").arg(image);
    }
    // Absolute: the child starts elsewhere.
    for (flag, file) in [("--host-config", &a.host_config), ("--runner-config", &a.runner_config)] {
        if let Some(f) = file {
            cmd.arg(flag).arg(std::path::absolute(f)?);
        }
    }
    cmd.env("RIVER_UP_DETACHED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // A new session, so the cluster outlives the terminal that started it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().context("starting river up in the background")?;
    river_creds::write_atomic(&pid_file, child.id().to_string().as_bytes(), 0o644)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read(&log_path)
            .map(|b| String::from_utf8_lossy(&b[usize::try_from(start).unwrap_or(0)..]).into_owned())?;
        if text.lines().any(|l| l == READY) {
            // The summary `up` printed, without the log lines around it.
            for line in text
                .lines()
                .skip_while(|l| !l.starts_with("river is up"))
                .take_while(|l| *l != READY)
            {
                println!("{line}");
            }
            println!(
                "(running in the background, pid {}; log in {})",
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let _ = std::fs::remove_file(&pid_file);
            bail!(
                "river up exited ({status}) before it was ready; see {}:\n{text}",
                log_path.display()
            );
        }
        if std::time::Instant::now() > deadline {
            bail!("river up was not ready within 60s; see {}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn running_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    // Signal 0 checks the process exists without touching it.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with signal 0 only checks for the process; no memory is involved.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    (alive && !zombie(pid)).then_some(pid)
}

/// Whether `pid` has exited and waits only to be reaped: signal 0 still finds such a process,
/// and where nothing reaps orphans (some container inits) it stays so.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn down(a: DownArgs) -> anyhow::Result<()> {
    let dir = up_dir(a.state_dir);
    let pid_file = dir.join("river.pid");
    let Some(pid) = running_pid(&pid_file) else {
        let _ = std::fs::remove_file(&pid_file);
        bail!("no `river up --detach` is running for {}", dir.display());
    };
    #[allow(unsafe_code)]
    // SAFETY: sends SIGTERM to the process we started; no memory is involved.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while running_pid(&pid_file).is_some() {
        if std::time::Instant::now() > deadline {
            bail!("river up (pid {pid}) did not stop within 20s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&pid_file);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "stopped river up (pid {pid}); its state stays in {}",
        dir.display()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_process_not_yet_reaped_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("river.pid");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        std::fs::write(&pid_file, pid.to_string()).unwrap();
        assert_eq!(running_pid(&pid_file), Some(pid));
        // Killed and not waited for: a zombie until `wait` below.
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !zombie(pid) {
            assert!(std::time::Instant::now() < deadline, "the child never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(running_pid(&pid_file), None);
        child.wait().unwrap();
        assert_eq!(running_pid(&pid_file), None);
    }
}
