//! A real terminal for tests of interactive commands: tmux, driven by its own server.

#![allow(dead_code)]

use std::process::{Command, Output};

/// A tmux server of the test's own, with one detached session running `command`: a real
/// terminal for interactive commands.
pub struct Tmux(String);

impl Tmux {
    pub fn start(command: &str, cols: u16, rows: u16) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux(format!("river-test-{}-{n}", std::process::id()));
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                command,
            ])
            .status
            .success();
        assert!(ok, "tmux starts");
        t
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Waits until the screen shows `text`.
    pub fn expect(&self, text: &str) {
        for _ in 0..400 {
            if self.screen().contains(text) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the terminal never showed {text:?}:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// `river connect ID` as a user at a terminal (config directory `cfg`): the prompt `prompt` comes,
/// typed input runs, the window's size and a change of it reach the program, Ctrl-C reaches the
/// program inside (not river), and the shell's exit code is river's.
pub fn connect_interactively(exe: &str, cfg: &std::path::Path, id: &str, prompt: &str) {
    let tmux = Tmux::start(
        &format!(
            "RIVER_CONFIG_DIR={} {exe} connect {id}; echo EXIT=$?; sleep 60",
            cfg.display()
        ),
        100,
        30,
    );
    tmux.expect(prompt);
    tmux.keys(&["echo typed-$((6*7))", "Enter"]);
    tmux.expect("typed-42");
    tmux.keys(&["stty size", "Enter"]);
    tmux.expect("30 100");
    assert!(tmux
        .cmd(&["resize-window", "-t", "t", "-x", "90", "-y", "25"])
        .status
        .success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux.keys(&["stty size", "Enter"]);
    tmux.expect("25 90");
    tmux.keys(&["sleep 100", "Enter"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-$((1+1))", "Enter"]);
    tmux.expect("still-2");
    tmux.keys(&["exit 3", "Enter"]);
    tmux.expect("EXIT=3");
}
