//! Printing data for people (tables) and programs (`-o json`).

use crate::args::Output;
use comfy_table::{presets::NOTHING, Table};
use serde::Serialize;

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.iter().map(|h| h.to_string()));
    for r in rows {
        t.add_row(r);
    }
    // comfy-table pads the first column with a space; trim lines for clean copy-paste.
    for line in t.to_string().lines() {
        println!("{}", line.trim_end().strip_prefix(' ').unwrap_or(line.trim_end()));
    }
}

/// Prints `v` as JSON or runs `human` to print it for people.
pub fn show<T: Serialize>(output: Output, v: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    match output {
        Output::Json => json(v),
        Output::Table => {
            human(v);
            Ok(())
        }
    }
}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
pub struct Progress {
    what: &'static str,
    tty: bool,
    drawn: bool,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        use std::io::IsTerminal as _;
        Self {
            what,
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Draws `(done, total)`; `None` clears the line.
    pub fn show(&mut self, at: Option<(u64, u64)>) {
        let Some((done, total)) = at else {
            return self.clear();
        };
        if !self.tty || total == 0 {
            return;
        }
        let width = 30u64;
        let filled = usize::try_from((done.min(total) * width) / total).unwrap_or(0);
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(30 - filled.min(30)));
        eprint!("\r{} [{bar}] {} / {}  ", self.what, bytes(done), bytes(total));
        self.drawn = true;
    }

    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r{}\r", " ".repeat(80));
            self.drawn = false;
        }
    }
}

#[allow(clippy::cast_precision_loss)]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "12s ago", "3m ago", "in 2h".
pub fn ago(then_s: i64, now_s: i64) -> String {
    let d = now_s - then_s;
    let (n, future) = if d >= 0 { (d, false) } else { (-d, true) };
    let text = match n {
        0..=59 => format!("{n}s"),
        60..=3599 => format!("{}m", n / 60),
        3600..=86_399 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(ago(100, 112), "12s ago");
        assert_eq!(ago(100, 100 + 7200), "2h ago");
        assert_eq!(ago(100 + 90, 100), "in 1m");
    }
}
