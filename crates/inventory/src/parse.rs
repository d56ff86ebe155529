//! Pure parsers for the kernel's text files.

/// `0-3,8,10-11` → `[0,1,2,3,8,10,11]`. `None` on anything malformed.
pub fn cpulist(s: &str) -> Option<Vec<u32>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: Option<u64>,
    pub available: Option<u64>,
}

fn kb_field(line: &str) -> Option<u64> {
    let mut it = line.split_whitespace().rev();
    let unit = it.next()?;
    let v: u64 = it.next()?.parse().ok()?;
    (unit == "kB").then(|| v * 1024)
}

/// `/proc/meminfo`.
pub fn meminfo(s: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in s.lines() {
        if line.starts_with("MemTotal:") {
            m.total = kb_field(line);
        } else if line.starts_with("MemAvailable:") {
            m.available = kb_field(line);
        }
    }
    m
}

/// `/sys/devices/system/node/nodeN/meminfo`: its MemTotal.
pub fn numa_meminfo(s: &str) -> Option<u64> {
    s.lines().find(|l| l.contains("MemTotal:")).and_then(kb_field)
}

/// Busy and total jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn cpu_times(s: &str) -> Option<CpuTimes> {
    let line = s.lines().next()?;
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

#[allow(clippy::cast_precision_loss)]
pub fn cpu_percent(a: CpuTimes, b: CpuTimes) -> f32 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    (b.busy.saturating_sub(a.busy) as f64 * 100.0 / total as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(cpulist("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpulist(""), Some(vec![]));
        assert_eq!(cpulist("3-1"), None);
        assert_eq!(cpulist("a"), None);
        assert_eq!(cpulist("0-4294967295"), None);
    }

    #[test]
    fn meminfo_fields() {
        let m = meminfo("MemTotal:  2048 kB\nMemFree: 1 kB\nMemAvailable: 1024 kB\n");
        assert_eq!(
            m,
            MemInfo {
                total: Some(2048 * 1024),
                available: Some(1024 * 1024)
            }
        );
        assert_eq!(
            numa_meminfo("Node 0 MemTotal:       4 kB\nNode 0 MemFree: 1 kB"),
            Some(4096)
        );
    }

    #[test]
    fn cpu_use_between_samples() {
        let a = cpu_times("cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 1 2 3 4").unwrap();
        let b = cpu_times("cpu  20 0 20 160 0 0 0 0 0 0").unwrap();
        assert_eq!(a, CpuTimes { busy: 20, total: 100 });
        assert!((cpu_percent(a, b) - 20.0).abs() < 0.01);
        assert_eq!(cpu_times("intr 1 2"), None);
    }
}
