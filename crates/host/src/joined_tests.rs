//! Host and runner joined in memory: the host's services over a real store, and a node that is
//! the runner's real executor over fake backends (`river_runner::testing`), connected by
//! channels in place of the mesh. A session begins as on the mesh (the node's snapshot settled
//! first, then attached); what the host sends reaches the executor, and what it reports goes
//! through `reports::on_runner_msg`, the function the mesh's session loop calls. So a task's
//! whole round — submit, place, start, run, end, acknowledgement — and a runner's restart or
//! lost connection are tested end to end in milliseconds.

use crate::service_tests::{host, schedule, spec, submit, task, user, Host, Runner};
use crate::Ctx;
use river_proto::msg::Signal;
use river_runner::testing::{Fake, FakeNode};
use river_task::state::TaskState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A node's session with the host, running.
struct Link {
    containers: Arc<Fake>,
    processes: Arc<Fake>,
    stop: oneshot::Sender<()>,
    pump: tokio::task::JoinHandle<FakeNode>,
}

/// Node `name` joins the cluster with `cores` cores (recorded as a runner's join would).
async fn join(ctx: &Arc<Ctx>, dir: &std::path::Path, name: &str, cores: u32) -> FakeNode {
    Runner::join(ctx, name, cores).await;
    ctx.registry.detach_in_memory(name);
    FakeNode::new(name, dir)
}

impl Link {
    /// A session begins: the node's snapshot is settled, then it is attached and online, then
    /// messages flow both ways until [`Link::down`].
    async fn up(ctx: &Arc<Ctx>, mut node: FakeNode) -> Self {
        let name = node.name().to_owned();
        let snapshot = node.snapshot().await;
        let settled = crate::reports::reconcile(ctx, &name, snapshot).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        ctx.registry.attach_in_memory(&name, tx);
        ctx.registry.seen(&name, ctx.clock.now_ms());
        crate::reports::settle(ctx, &name, settled);
        let (stop, mut stopped) = oneshot::channel();
        let (containers, processes) = (node.containers.clone(), node.processes.clone());
        let ctx = ctx.clone();
        let pump = tokio::spawn(async move {
            let mut resent = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    Some(msg) = rx.recv() => node.handle(msg),
                    Some(msg) = node.recv() => {
                        crate::reports::on_runner_msg(&ctx, &name, msg, &mut resent).await.unwrap();
                    }
                }
            }
            ctx.registry.detach_in_memory(&name);
            node
        });
        Self {
            containers,
            processes,
            stop,
            pump,
        }
    }

    /// The connection drops: nothing more flows; the node keeps running its work.
    async fn down(self) -> FakeNode {
        let _ = self.stop.send(());
        self.pump.await.unwrap()
    }
}

/// Waits (5 s at most) for task `id` to be `state` on the host; its exit code and message.
async fn reaches(ctx: &Ctx, id: u64, state: TaskState) -> (Option<i64>, Option<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let t = task(ctx, id).await;
        if t.state == state {
            return (t.exit_code, t.message);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} is {} ({:?}), not {state}",
            t.state,
            t.message
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the node's work of task `id` to be running.
async fn started(fake: &Fake, id: u64) {
    for _ in 0..1000 {
        if fake.state(id).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("task {id} never started on the node");
}

/// A host with node `n1` of `cores` cores joined and its session up (and where the node keeps
/// its state).
async fn cluster(cores: u32) -> (Host, tempfile::TempDir, Link) {
    let h = host().await;
    let dir = tempfile::tempdir().unwrap();
    let link = Link::up(&h.ctx, join(&h.ctx, dir.path(), "n1", cores).await).await;
    (h, dir, link)
}

/// `n` one-core tasks submitted by alice and scheduled; the first is running.
async fn submitted(h: &Host, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.extend(submit(&h.ctx, &user("alice"), spec(1)).await.unwrap());
    }
    schedule(&h.ctx).await;
    reaches(&h.ctx, ids[0], TaskState::Running).await;
    ids
}

#[tokio::test]
async fn a_task_goes_round_from_submit_to_its_end_and_the_node_forgets_it_once_stored() {
    let (h, _dir, link) = cluster(4).await;
    let id = submitted(&h, 1).await[0];
    link.containers.exit(id, 0);
    assert_eq!(reaches(&h.ctx, id, TaskState::Completed).await.0, Some(0));
    // The host acknowledged the end: the node's next snapshot leaves it out.
    let node = link.down().await;
    assert!(node.recorded(id).is_some());
    assert!(node.snapshot().await.is_empty(), "{:?}", node.snapshot().await);
}

#[tokio::test]
async fn a_kill_goes_from_the_user_to_the_work_and_its_end_comes_back() {
    let (h, _dir, link) = cluster(4).await;
    let alice = user("alice");
    let id = submitted(&h, 1).await[0];
    crate::tasks::signal(&h.ctx, &alice, id, Signal::Kill).await.unwrap();
    assert_eq!(reaches(&h.ctx, id, TaskState::Killed).await.0, Some(137));
    assert!(link.containers.calls().contains(&format!("signal {id} Kill")));
}

#[tokio::test]
async fn process_work_runs_on_the_process_backend() {
    let (h, _dir, link) = cluster(4).await;
    let mut s = spec(1);
    s.image.clear();
    s.no_container = true;
    let id = submit(&h.ctx, &user("alice"), s).await.unwrap()[0];
    schedule(&h.ctx).await;
    started(&link.processes, id).await;
    link.processes.exit(id, 3);
    assert_eq!(reaches(&h.ctx, id, TaskState::Failed).await.0, Some(3));
    assert!(link.containers.calls().is_empty());
}

#[tokio::test]
async fn an_end_while_the_node_is_away_arrives_with_its_next_session() {
    let (h, _dir, link) = cluster(4).await;
    let id = submitted(&h, 1).await[0];
    let (containers, node) = (link.containers.clone(), link.down().await);
    // Ends while no session carries its report; the node keeps it on disk.
    containers.exit(id, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        task(&h.ctx, id).await.state,
        TaskState::Running,
        "the host has not heard"
    );
    let _link = Link::up(&h.ctx, node).await;
    assert_eq!(reaches(&h.ctx, id, TaskState::Completed).await.0, Some(0));
}

#[tokio::test]
async fn a_restarted_runner_keeps_its_task_and_the_host_waits_for_the_end() {
    let (h, _dir, link) = cluster(4).await;
    let id = submitted(&h, 1).await[0];
    let node = link.down().await.restart().await;
    let link = Link::up(&h.ctx, node).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        task(&h.ctx, id).await.state,
        TaskState::Running,
        "its work is still there"
    );
    link.containers.exit(id, 1);
    assert_eq!(reaches(&h.ctx, id, TaskState::Failed).await.0, Some(1));
}

#[tokio::test]
async fn a_task_whose_work_the_machine_lost_fails_and_its_cores_go_to_the_next() {
    let (h, _dir, link) = cluster(1).await;
    let ids = submitted(&h, 2).await;
    let (a, b) = (ids[0], ids[1]);
    // The machine lost the work while the runner was down (a reboot): nothing of it is left.
    let node = link.down().await;
    let containers = node.containers.clone();
    containers.forget(a);
    let node = node.restart().await;
    let _link = Link::up(&h.ctx, node).await;
    let (_, why) = reaches(&h.ctx, a, TaskState::Failed).await;
    assert_eq!(
        why.as_deref(),
        Some("node n1 no longer has this task (its container is gone)")
    );
    schedule(&h.ctx).await;
    reaches(&h.ctx, b, TaskState::Running).await;
}

#[tokio::test]
async fn a_cancelled_queued_task_never_reaches_the_node() {
    let (h, _dir, link) = cluster(1).await;
    let alice = user("alice");
    let ids = submitted(&h, 2).await;
    let (a, b) = (ids[0], ids[1]);
    crate::tasks::signal(&h.ctx, &alice, b, Signal::Kill).await.unwrap();
    reaches(&h.ctx, b, TaskState::Killed).await;
    link.containers.exit(a, 0);
    reaches(&h.ctx, a, TaskState::Completed).await;
    schedule(&h.ctx).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!link.containers.calls().contains(&format!("start {b}")));
}
