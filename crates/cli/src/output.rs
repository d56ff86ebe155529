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

/// A one-line progress bar on standard error — bytes, rate and time left — drawn only when it is
/// a terminal (nothing when piped or redirected).
pub struct Progress {
    what: String,
    tty: bool,
    /// The length of the line on screen (0: none).
    drawn: usize,
    /// When bytes began to move, and how many had then: the rate is measured from there.
    since: Option<(std::time::Instant, u64)>,
}

impl Progress {
    pub fn new(what: &str) -> Self {
        use std::io::IsTerminal as _;
        Self {
            what: what.to_owned(),
            tty: std::io::stderr().is_terminal(),
            drawn: 0,
            since: None,
        }
    }

    /// Draws `(done, total)`; `None` clears the line.
    pub fn show(&mut self, at: Option<(u64, u64)>) {
        let Some((done, total)) = at else {
            return self.clear();
        };
        if total == 0 {
            return;
        }
        let what = self.what.clone();
        self.draw(&what, done, total);
    }

    /// Draws a step of an operation: what it does now, and its bytes when it moves any (`total`
    /// 0: not known).
    pub fn step(&mut self, what: &str, done: u64, total: u64) {
        self.draw(&format!("{}: {what}", self.what), done, total);
    }

    fn draw(&mut self, what: &str, done: u64, total: u64) {
        if !self.tty {
            return;
        }
        let now = std::time::Instant::now();
        let rate = match self.since {
            Some((t, d)) if done >= d => {
                let secs = now.duration_since(t).as_secs_f64();
                #[allow(clippy::cast_precision_loss)]
                (secs >= 0.5).then(|| (done - d) as f64 / secs)
            }
            // Nothing moved yet, or a new transfer began.
            _ => {
                self.since = (done > 0 || total > 0).then_some((now, done));
                None
            }
        };
        let line = progress_line(what, done, total, rate);
        // The line is redrawn in place; what the last one had beyond this one is blanked.
        let len = line.chars().count();
        eprint!("\r{line}{}", " ".repeat(self.drawn.saturating_sub(len)));
        self.drawn = len;
    }

    pub fn clear(&mut self) {
        if self.drawn > 0 {
            eprint!("\r{}\r", " ".repeat(self.drawn));
            self.drawn = 0;
        }
        self.since = None;
    }
}

/// `what [#####-----] 12.0 MiB / 300.0 MiB  25.3 MiB/s  11s left`, shortened to what is known.
pub fn progress_line(what: &str, done: u64, total: u64, rate: Option<f64>) -> String {
    let mut line = what.to_owned();
    if let Some(part) = (done.min(total) * 20).checked_div(total) {
        let filled = usize::try_from(part).unwrap_or(0);
        line += &format!(
            " [{}{}] {} / {}",
            "#".repeat(filled),
            "-".repeat(20 - filled.min(20)),
            bytes(done),
            bytes(total)
        );
    } else if done > 0 {
        line += &format!(" {}", bytes(done));
    } else {
        line += "…";
    }
    if let Some(r) = rate.filter(|r| *r > 0.0) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let per_s = r as u64;
        line += &format!("  {}/s", bytes(per_s));
        if total > done {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let left = ((total - done) as f64 / r).ceil() as u64;
            line += &format!("  {} left", duration(left));
        }
    }
    line
}

/// "45s", "3m 20s", "2h 5m".
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
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

    #[test]
    fn a_progress_line_says_bytes_rate_and_time_left_as_far_as_known() {
        let mib = 1024 * 1024;
        assert_eq!(
            progress_line("snapshot", 100 * mib, 300 * mib, Some(50.0 * 1024.0 * 1024.0)),
            "snapshot [######--------------] 100.0 MiB / 300.0 MiB  50.0 MiB/s  4s left"
        );
        assert_eq!(
            progress_line("snapshot: committing", 0, 0, None),
            "snapshot: committing…"
        );
        assert_eq!(progress_line("x", 3 * mib, 0, None), "x 3.0 MiB");
        assert_eq!(duration(200), "3m 20s");
        assert_eq!(duration(7500), "2h 5m");
    }
}
