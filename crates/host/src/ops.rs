//! How far long operations have got — a snapshot, an environment made or committed — by a key
//! the client knows before it asks (`snapshot:ID`, `env:NAME`), so `river` can draw a bar from a
//! second request while its own one runs. Kept in memory only: an operation outlives neither the
//! host nor its request.

use river_proto::msg::OpProgress;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct Ops(Mutex<HashMap<String, OpProgress>>);

impl Ops {
    /// Starts tracking `key`; it is forgotten when the returned guard goes.
    pub fn start(&self, key: String, phase: &str) -> Op<'_> {
        self.set(&key, phase, 0, 0);
        Op { ops: self, key }
    }

    fn set(&self, key: &str, phase: &str, done: u64, total: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(
                key.to_owned(),
                OpProgress {
                    phase: phase.to_owned(),
                    done,
                    total,
                },
            );
        }
    }

    pub fn get(&self, key: &str) -> Option<OpProgress> {
        self.0.lock().ok()?.get(key).cloned()
    }
}

/// One operation being tracked.
pub(crate) struct Op<'a> {
    ops: &'a Ops,
    key: String,
}

impl Op<'_> {
    pub fn update(&self, phase: &str, done: u64, total: u64) {
        self.ops.set(&self.key, phase, done, total);
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.ops.0.lock() {
            m.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_is_seen_while_it_runs_and_forgotten_after() {
        let ops = Ops::default();
        {
            let op = ops.start("snapshot:3".into(), "committing the container");
            assert_eq!(ops.get("snapshot:3").unwrap().phase, "committing the container");
            op.update("sending the archive", 5, 10);
            assert_eq!(ops.get("snapshot:3").map(|p| (p.done, p.total)), Some((5, 10)));
            assert_eq!(ops.get("snapshot:4"), None);
        }
        assert_eq!(ops.get("snapshot:3"), None);
    }
}
