//! `river init config` and `river init service`: files an operator would otherwise write by hand.
//! The templates live in `deploy/`; a test checks the config templates match the real defaults.

use crate::args::InitCmd;
use anyhow::{bail, Context as _};
use std::io::Write as _;
use std::path::Path;

pub const HOST_TOML: &str = include_str!("../../../../deploy/host.toml");
pub const RUNNER_TOML: &str = include_str!("../../../../deploy/runner.toml");
const HOST_UNIT: &str = include_str!("../../../../deploy/systemd/river-host.service");
const RUNNER_UNIT: &str = include_str!("../../../../deploy/systemd/river-runner.service");

pub fn run(cmd: InitCmd) -> anyhow::Result<()> {
    match cmd {
        InitCmd::Config { host, file, .. } => {
            let text = if host { HOST_TOML } else { RUNNER_TOML };
            match file {
                Some(p) => {
                    write_new(&p, text)?;
                    eprintln!("wrote {}", p.display());
                }
                None => print!("{text}"),
            }
        }
        InitCmd::Service { host, dir, .. } => {
            let exe = std::env::current_exe().context("finding the river binary")?;
            let (name, unit) = if host {
                ("river-host.service", HOST_UNIT)
            } else {
                ("river-runner.service", RUNNER_UNIT)
            };
            let text = unit.replace("@RIVER@", &exe.display().to_string());
            match dir {
                Some(d) => {
                    std::fs::create_dir_all(&d)?;
                    let p = d.join(name);
                    write_new(&p, &text)?;
                    eprintln!(
                        "wrote {}; now: systemctl daemon-reload && systemctl enable --now {name}",
                        p.display()
                    );
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

/// Writes a file that must not exist yet: init never overwrites an operator's edits.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        bail!("{} exists; not overwriting it (remove it first)", path.display());
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_templates_state_the_real_defaults() {
        let host: river_host::HostConfig = toml::from_str(HOST_TOML).unwrap();
        assert_eq!(host, river_host::HostConfig::default());
        let runner: river_runner::RunnerConfig = toml::from_str(RUNNER_TOML).unwrap();
        assert_eq!(runner, river_runner::RunnerConfig::default());
    }

    #[test]
    fn units_name_the_binary() {
        assert!(HOST_UNIT.contains("@RIVER@ host") && RUNNER_UNIT.contains("@RIVER@ runner"));
        assert!(RUNNER_UNIT.contains("KillMode=process"));
    }
}
