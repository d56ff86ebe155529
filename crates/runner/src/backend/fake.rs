//! A backend in memory, for the executor's tests: work "runs" until the test ends it, and every
//! call is written down.

use super::{Backend, Ended, Found, Job, Refused, Seen};
use crate::terminal::{Command, Started};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use river_proto::msg::Signal;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::watch;

struct Work {
    vps: bool,
    seen: Seen,
    /// Set when the work ends; `wait` returns it.
    end: watch::Sender<Option<Ended>>,
}

pub struct Fake {
    work: Mutex<BTreeMap<u64, Work>>,
    /// The next start's refusal, if any.
    refuse: Mutex<Option<Refused>>,
    /// Every call, in order: "start 1", "signal 1 Kill", "remove 1 vps", ...
    calls: Mutex<Vec<String>>,
    /// Starts wait while this is true (work that takes a while to start).
    held: watch::Sender<bool>,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            work: Mutex::default(),
            refuse: Mutex::default(),
            calls: Mutex::default(),
            held: watch::Sender::new(false),
        }
    }
}

impl Fake {
    /// Starts wait (`true`) until let go (`false`).
    pub fn hold_starts(&self, held: bool) {
        self.held.send_replace(held);
    }

    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Refuses the next start.
    pub fn refuse_next(&self, r: Refused) {
        *self.refuse.lock().unwrap() = Some(r);
    }

    /// Ends task `id`'s work.
    pub fn end(&self, id: u64, ended: Ended) {
        let mut work = self.work.lock().unwrap();
        let w = work.get_mut(&id).expect("no such work");
        if let Ended::Exited { code, oom, .. } = &ended {
            w.seen = Seen::Exited { code: *code, oom: *oom };
        }
        w.end.send_replace(Some(ended));
    }

    /// Ends task `id`'s work with exit code `code`, its output whole.
    pub fn exit(&self, id: u64, code: i64) {
        self.end(
            id,
            Ended::Exited {
                code: Some(code),
                oom: false,
                output: Ok(()),
            },
        );
    }

    /// Work found on the node as if left by an earlier runner.
    pub fn place(&self, id: u64, vps: bool, seen: Seen) {
        let end = match seen {
            Seen::Exited { code, oom } => Some(Ended::Exited {
                code,
                oom,
                output: Ok(()),
            }),
            _ => None,
        };
        let work = Work {
            vps,
            seen,
            end: watch::Sender::new(end),
        };
        self.work.lock().unwrap().insert(id, work);
    }

    /// What is on the "node" of task `id`.
    pub fn state(&self, id: u64) -> Option<Seen> {
        self.work.lock().unwrap().get(&id).map(|w| w.seen)
    }
}

impl Backend for Fake {
    fn holds(&self, id: u64) -> bool {
        self.work.lock().unwrap().contains_key(&id)
    }

    fn start<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<(), Refused>> {
        self.note(format!("start {}", job.id));
        let mut held = self.held.subscribe();
        async move {
            let _ = held.wait_for(|h| !h).await;
            self.started(job)
        }
        .boxed()
    }

    fn wait(&self, id: u64) -> BoxFuture<'_, Ended> {
        let rx = self.work.lock().unwrap().get(&id).map(|w| w.end.subscribe());
        async move {
            let Some(mut rx) = rx else {
                return Ended::Lost(format!("lost track of task {id}"));
            };
            let end = match rx.wait_for(Option::is_some).await {
                Ok(end) => end.clone().expect("waited for an end"),
                Err(_) => Ended::Lost(format!("lost track of task {id}")),
            };
            end
        }
        .boxed()
    }

    fn signal(&self, id: u64, signal: Signal) -> BoxFuture<'_, Result<(), String>> {
        self.note(format!("signal {id} {signal:?}"));
        let known = self.holds(id);
        let result = match signal {
            _ if !known => Err(format!("task {id} is not running here")),
            Signal::Kill => {
                self.exit(id, 137);
                Ok(())
            }
            Signal::Stop => {
                self.exit(id, 143);
                Ok(())
            }
            Signal::Pause | Signal::Resume => {
                let mut work = self.work.lock().unwrap();
                let w = work.get_mut(&id).expect("known");
                w.seen = if signal == Signal::Pause {
                    Seen::Paused
                } else {
                    Seen::Running
                };
                Ok(())
            }
        };
        std::future::ready(result).boxed()
    }

    fn seen(&self, id: u64) -> BoxFuture<'_, Option<Seen>> {
        std::future::ready(self.state(id)).boxed()
    }

    fn found(&self) -> BoxFuture<'_, Vec<Found>> {
        let found = self
            .work
            .lock()
            .unwrap()
            .iter()
            .map(|(id, w)| Found {
                id: *id,
                vps: w.vps,
                seen: w.seen,
            })
            .collect();
        std::future::ready(found).boxed()
    }

    fn remove(&self, id: u64, vps: bool) -> BoxFuture<'_, Result<(), String>> {
        self.note(format!("remove {id}{}", if vps { " vps" } else { "" }));
        // As a forced removal does: running work is killed first.
        if matches!(self.state(id), Some(Seen::Running | Seen::Paused)) {
            self.exit(id, 137);
        }
        let gone = self.work.lock().unwrap().remove(&id);
        std::future::ready(gone.map(|_| ()).ok_or_else(|| format!("task {id} is not here"))).boxed()
    }

    fn exec<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<Started, String>> {
        std::future::ready(Err(format!("task {}: the fake backend runs no commands", cmd.task))).boxed()
    }

    fn network(&self, id: u64) -> BoxFuture<'_, Result<Option<i64>, String>> {
        let here = self.holds(id);
        std::future::ready(if here {
            Ok(None)
        } else {
            Err(format!("task {id} is not running here"))
        })
        .boxed()
    }
}

impl Fake {
    fn started(&self, job: Job<'_>) -> Result<(), Refused> {
        if let Some(r) = self.refuse.lock().unwrap().take() {
            return Err(r);
        }
        let mut work = self.work.lock().unwrap();
        match work.get_mut(&job.id) {
            // A kept VPS starts again.
            Some(w) if w.vps => {
                w.seen = Seen::Running;
                w.end.send_replace(None);
            }
            _ => {
                let w = Work {
                    vps: job.spec.vps.is_some(),
                    seen: Seen::Running,
                    end: watch::Sender::new(None),
                };
                work.insert(job.id, w);
            }
        }
        Ok(())
    }

    /// The work of task `id` is gone without a trace, as after the machine rebooted.
    pub fn forget(&self, id: u64) {
        self.work.lock().unwrap().remove(&id);
    }

    /// The tasks whose work is on the "node".
    pub fn found_ids(&self) -> Vec<u64> {
        self.work.lock().unwrap().keys().copied().collect()
    }
}
