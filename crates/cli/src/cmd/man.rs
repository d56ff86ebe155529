//! `river man`: manual pages in roff, made from the same definitions as `--help`, so they never
//! disagree with it.

use anyhow::Context as _;
use std::path::Path;

/// The page of river or of one of its commands (`path`: `["task", "submit"]`) on standard output;
/// with `dir`, every page as a file there (`river.1`, `river-task.1`, `river-task-submit.1`, …).
pub fn run(path: &[String], dir: Option<&Path>) -> anyhow::Result<()> {
    let mut root = <crate::args::Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    root.build();
    if let Some(dir) = dir {
        anyhow::ensure!(path.is_empty(), "--dir writes every page; name no command with it");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
        write_all(&root, dir).with_context(|| format!("cannot write the pages into {}", dir.display()))?;
        let count = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("river"))
            .count();
        eprintln!(
            "wrote {count} pages into {}; read one with: man -l {}",
            dir.display(),
            dir.join("river-task-submit.1").display()
        );
        return Ok(());
    }
    let mut cmd = &root;
    for (i, name) in path.iter().enumerate() {
        cmd = cmd.find_subcommand(name).with_context(|| {
            let parent = std::iter::once("river")
                .chain(path[..i].iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            format!("`{parent}` has no command {name:?}; see `{parent} --help`")
        })?;
    }
    let mut out = Vec::new();
    page(cmd).render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(())
}

fn page(cmd: &clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.clone())
        .source(format!("river {}", env!("CARGO_PKG_VERSION")))
        .manual("River Manual")
}

/// The page of `cmd` and of every command beneath it.
fn write_all(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_all(sub, dir)?;
    }
    page(cmd).generate_to(dir).map(drop)
}
