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
        let width = usize::from(window_size(2).1);
        let line = progress_line(what, done, total, rate, width);
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

/// The bar's cells when there is room.
const BAR: usize = 20;

/// A progress line's parts, so that it can give up the least useful ones to fit a narrow
/// terminal.
struct Line {
    what: String,
    /// The bar's fill (0 to 1) and the bytes "12.0 MiB / 300.0 MiB", when the total is known;
    /// else the bytes so far.
    fill: Option<f64>,
    amount: Option<String>,
    rate: Option<String>,
    left: Option<String>,
}

impl Line {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn new(what: &str, done: u64, total: u64, rate: Option<f64>) -> Self {
        let rate = rate.filter(|r| *r > 0.0);
        Self {
            what: what.to_owned(),
            fill: (total > 0).then(|| done.min(total) as f64 / total as f64),
            amount: if total > 0 {
                Some(format!("{} / {}", bytes(done), bytes(total)))
            } else {
                (done > 0).then(|| bytes(done))
            },
            rate: rate.map(|r| format!("{}/s", bytes(r as u64))),
            left: rate
                .filter(|_| total > done)
                .map(|r| format!("{} left", duration(((total - done) as f64 / r).ceil() as u64))),
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn render(&self, bar: usize) -> String {
        let mut line = self.what.clone();
        match (self.fill, &self.amount) {
            (Some(f), Some(amount)) => {
                if bar > 0 {
                    let filled = ((f * bar as f64) as usize).min(bar);
                    line += &format!(" [{}{}]", "#".repeat(filled), "-".repeat(bar - filled));
                }
                line += &format!(" {amount}");
            }
            (_, Some(amount)) => line += &format!(" {amount}"),
            _ => line += "…",
        }
        if let Some(rate) = &self.rate {
            line += &format!("  {rate}");
        }
        if let Some(left) = &self.left {
            line += &format!("  {left}");
        }
        line
    }
}

/// `line` made to fit `width` columns (0: no limit): the bar shrinks first, then the rate and the
/// time left go, and what is left is cut with "…" — a line wider than its terminal would wrap,
/// and each redraw would leave a broken copy behind.
fn fit(line: String, width: usize) -> String {
    // One column is kept free: a cursor in the last one wraps on some terminals.
    let room = width.saturating_sub(1);
    if width == 0 || line.chars().count() <= room {
        return line;
    }
    line.chars()
        .take(room.saturating_sub(1))
        .chain(std::iter::once('…'))
        .collect()
}

/// `what [#####-----] 12.0 MiB / 300.0 MiB  25.3 MiB/s  11s left`, shortened to what is known,
/// for `width` columns (0: no limit): it gives up first the bar's length, then the time left and
/// the rate, then the end of what it says.
pub fn progress_line(what: &str, done: u64, total: u64, rate: Option<f64>, width: usize) -> String {
    let mut parts = Line::new(what, done, total, rate);
    let room = width.saturating_sub(1);
    if width == 0 {
        return parts.render(BAR);
    }
    for bar in (5..=BAR).rev() {
        let line = parts.render(bar);
        if line.chars().count() <= room {
            return line;
        }
    }
    parts.left = None;
    for bar in [5, 0] {
        let line = parts.render(bar);
        if line.chars().count() <= room {
            return line;
        }
    }
    parts.rate = None;
    fit(parts.render(0), width)
}

/// The (rows, cols) of the terminal on descriptor `fd`, or (0, 0) when it is not one.
#[allow(unsafe_code)]
pub fn window_size(fd: libc::c_int) -> (u16, u16) {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 {
            (ws.ws_row, ws.ws_col)
        } else {
            (0, 0)
        }
    }
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
            progress_line("snapshot", 100 * mib, 300 * mib, Some(50.0 * 1024.0 * 1024.0), 0),
            "snapshot [######--------------] 100.0 MiB / 300.0 MiB  50.0 MiB/s  4s left"
        );
        assert_eq!(
            progress_line("snapshot: committing", 0, 0, None, 0),
            "snapshot: committing…"
        );
        assert_eq!(progress_line("x", 3 * mib, 0, None, 0), "x 3.0 MiB");
        assert_eq!(duration(200), "3m 20s");
        // On an 80-column terminal the long line of a snapshot gives up bar, then rate and time
        // left, and never wraps.
        let what = "snapshot of VPS 1: sending the archive to the host";
        let rate = Some(515.1 * 1024.0);
        let wide = progress_line(what, 515 * 1024, 240 * mib, rate, 0);
        assert!(wide.chars().count() > 100, "{wide}");
        for width in [200, 120, 100, 80, 60, 40, 20] {
            let line = progress_line(what, 515 * 1024, 240 * mib, rate, width);
            assert!(line.chars().count() < width, "{width}: {line}");
        }
        let at80 = progress_line(what, 515 * 1024, 240 * mib, rate, 80);
        assert!(at80.contains("515.0 KiB / 240.0 MiB"), "{at80}");
        assert_eq!(progress_line(what, 515 * 1024, 240 * mib, rate, 200), wide);
        assert_eq!(duration(7500), "2h 5m");
    }
}
