//! The standard extras a command-line tool is expected to have, as a user meets them: shell
//! completions that complete, and manual pages that `man` reads.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::process::Command;

#[test]
fn shells_complete_commands_and_options() {
    let d = tempfile::tempdir().unwrap();
    let o = river(&d.path().join("cfg"), &["completions", "bash"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let script = d.path().join("river.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    // What bash offers after `river task su<Tab>` and `river vps rm 1 -<Tab>`.
    let complete = |words: &str, cword: usize| {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; _river river \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(complete("river task su", 2), "submit");
    assert!(
        complete("river vps rm 1 -", 4).contains("--yes"),
        "{}",
        complete("river vps rm 1 -", 4)
    );
    for shell in ["zsh", "fish"] {
        let o = river(&d.path().join("cfg"), &["completions", shell]);
        assert!(o.status.success() && o.stdout.len() > 1000, "{shell}");
    }
}

#[test]
fn every_command_has_a_manual_page_that_man_reads() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    let pages = d.path().join("man1");
    let o = river(&cfg, &["man", "--dir", pages.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    // A page for river and for every command, at every depth.
    for name in [
        "river",
        "river-task",
        "river-task-submit",
        "river-vps-snapshot-rm",
        "river-user-token-create",
        "river-man",
    ] {
        let page = std::fs::read_to_string(pages.join(format!("{name}.1"))).unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(
            page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"),
            "{name}.1:\n{page}"
        );
    }
    // The same text as --help: options with their explanations, and the examples.
    let submit = std::fs::read_to_string(pages.join("river-task-submit.1")).unwrap();
    assert!(submit.contains("kill\\-on\\-interrupt"), "{submit}");
    assert!(submit.contains("Examples"), "{submit}");
    // One page on standard output, as `man -l -` reads it.
    let o = river(&cfg, &["man", "task", "submit"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(o.stdout, submit.as_bytes());
    if Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let o = Command::new("man")
            .arg("-l")
            .arg(pages.join("river-task-submit.1"))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(shown.contains("Submit a command"), "{shown}");
    }
    // A command that does not exist is named, with where to look.
    let o = river(&cfg, &["man", "task", "nosuch"]);
    assert!(
        !o.status.success() && text(&o).1.contains("`river task --help`"),
        "{:?}",
        text(&o)
    );
}
