//! Targets: `HOST[:NUMA][::GPU,GPU]`, where a task must run.
//!
//! `node1` (anywhere on node1), `node1:0` (NUMA node 0 of node1), `node1::0,1` (GPUs 0 and 1),
//! `node1:0::0,1` (both). The GPU list follows the last `::`, so host names never clash with it.

use river_proto::name::Name;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: Name,
    pub numa: Option<u32>,
    /// Specific GPU indices; empty means none named (a `--gpus N` count may still apply).
    pub gpus: Vec<u32>,
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, String> {
        let hint = "use HOST, HOST:NUMA, HOST::GPU,GPU or HOST:NUMA::GPU,GPU (e.g. gpu-01:0::0,1)";
        let (head, gpus) = match s.rsplit_once("::") {
            Some((h, g)) => {
                let mut ids = Vec::new();
                for part in g.split(',') {
                    let id: u32 = part
                        .trim()
                        .parse()
                        .map_err(|_| format!("invalid GPU id {part:?} in target {s:?}; {hint}"))?;
                    if ids.contains(&id) {
                        return Err(format!("GPU {id} is named twice in target {s:?}"));
                    }
                    ids.push(id);
                }
                (h, ids)
            }
            None => (s, Vec::new()),
        };
        let (host, numa) = match head.split_once(':') {
            Some((h, n)) => {
                let id: u32 = n
                    .parse()
                    .map_err(|_| format!("invalid NUMA node {n:?} in target {s:?}; {hint}"))?;
                (h, Some(id))
            }
            None => (head, None),
        };
        let node = Name::parse(host).map_err(|e| format!("invalid host in target {s:?}: {e}"))?;
        Ok(Self { node, numa, gpus })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.node)?;
        if let Some(n) = self.numa {
            write!(f, ":{n}")?;
        }
        if !self.gpus.is_empty() {
            let ids: Vec<String> = self.gpus.iter().map(u32::to_string).collect();
            write!(f, "::{}", ids.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for (text, numa, gpus) in [
            ("node1", None, vec![]),
            ("node1:0", Some(0), vec![]),
            ("node1::0,1", None, vec![0, 1]),
            ("node1:1::3", Some(1), vec![3]),
            ("gpu-01.lab:0::0,1,2,3", Some(0), vec![0, 1, 2, 3]),
        ] {
            let t = Target::parse(text).unwrap();
            assert_eq!((t.numa, t.gpus.clone()), (numa, gpus), "{text}");
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn malformed_targets_explain_the_syntax() {
        for bad in [
            "",
            ":0",
            "node1:x",
            "node1::",
            "node1::a",
            "node1::0,0",
            "Node1",
            "node1:0:1",
            "node1:-1",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains("target"), "{bad:?}: {e}");
        }
    }
}
