//! The host's task lifecycle against a real store, without sockets: a report, a reconcile or a
//! removal of a node drives it as the mesh would, and what users would see is read back.

use super::*;
use crate::service_tests::host;
use river_proto::msg::{Assigned, Response, TaskPlacement, TaskReport, TaskSpec};

/// A group of `nodes.len()` members, member `i` running on `nodes[i]`; their ids.
async fn running_group(ctx: &Ctx, nodes: &[&str]) -> Vec<u64> {
    let spec = TaskSpec::new("img", vec!["train".into()]);
    let ranks: Vec<Assigned> = (0..nodes.len())
        .map(|rank| Assigned {
            rank: Some(u32::try_from(rank).unwrap()),
            ..Assigned::default()
        })
        .collect();
    let members: Vec<_> = ranks.iter().map(|a| (&spec, a, None)).collect();
    let ids = ctx
        .store
        .insert_batch_as("user alice", &members, crate::clock::now_ms(), TaskState::Queued)
        .await
        .unwrap();
    for (id, node) in ids.iter().zip(nodes) {
        run_on(ctx, *id, node).await;
    }
    ids
}

/// What a runner's snapshot says of a task it still runs.
fn still_running(id: u64) -> TaskReport {
    TaskReport {
        id,
        state: "running".into(),
        exit_code: None,
        message: None,
    }
}

fn on(node: &str) -> Option<TaskPlacement> {
    Some(TaskPlacement {
        node: node.into(),
        cores: vec![0],
        numa: None,
        gpus: vec![],
        memory_bytes: 0,
        ip: None,
        owner: None,
    })
}

async fn run_on(ctx: &Ctx, id: u64, node: &str) {
    let mut t = ctx.store.task(id).await.unwrap().unwrap();
    t.placement = on(node);
    assert!(change(ctx, &mut t, Event::Placed, None).await.unwrap());
    let running = Event::Reported {
        state: TaskState::Running,
        exit_code: None,
    };
    assert!(change(ctx, &mut t, running, None).await.unwrap());
}

async fn task(ctx: &Ctx, id: u64) -> TaskRecord {
    ctx.store.task(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_member_whose_container_is_gone_ends_the_rest_of_its_group() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = running_group(&ctx, &["n1", "n2", "n3"]).await;
    // n1 comes back without member 0: its container is gone.
    let others = vec![still_running(999)];
    crate::reports::reconcile(&ctx, "n1", others).await.unwrap();
    let gone = task(&ctx, ids[0]).await;
    assert_eq!(gone.state, TaskState::Failed);
    assert!(gone.message.unwrap().contains("no longer has this task"));
    for id in &ids[1..] {
        let t = task(&ctx, *id).await;
        assert_eq!(t.state, TaskState::Killed, "member {id} still {}", t.state);
        let why = t.message.unwrap();
        assert!(
            why.contains(&format!("member 0 of group {} (task {})", ids[0], ids[0])),
            "{why}"
        );
        assert!(t.finished_at_ms.is_some());
    }
}

#[tokio::test]
async fn a_removed_node_and_a_failed_report_end_a_group_the_same_way() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = running_group(&ctx, &["n1", "n2"]).await;
    crate::tasks::node_removed(&ctx, "n2").await.unwrap();
    assert_eq!(task(&ctx, ids[1]).await.state, TaskState::Failed);
    assert_eq!(task(&ctx, ids[0]).await.state, TaskState::Killed);

    let ids = running_group(&ctx, &["n1", "n3"]).await;
    crate::reports::on_report(&ctx, "n3", ids[1], "failed", Some(3), None)
        .await
        .unwrap();
    let failed = task(&ctx, ids[1]).await;
    assert_eq!((failed.state, failed.exit_code), (TaskState::Failed, Some(3)));
    assert_eq!(task(&ctx, ids[0]).await.state, TaskState::Killed);
}

#[tokio::test]
async fn a_completed_member_leaves_the_others_running() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = running_group(&ctx, &["n1", "n2"]).await;
    crate::reports::on_report(&ctx, "n2", ids[1], "completed", Some(0), None)
        .await
        .unwrap();
    assert_eq!(task(&ctx, ids[1]).await.state, TaskState::Completed);
    assert_eq!(task(&ctx, ids[0]).await.state, TaskState::Running);
}

#[tokio::test]
async fn a_late_report_cannot_revive_an_ended_task_nor_come_from_another_node() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = running_group(&ctx, &["n1"]).await;
    crate::reports::on_report(&ctx, "n1", ids[0], "killed", Some(137), None)
        .await
        .unwrap();
    crate::reports::on_report(&ctx, "n1", ids[0], "running", None, None)
        .await
        .unwrap();
    crate::reports::on_report(&ctx, "n2", ids[0], "completed", Some(0), None)
        .await
        .unwrap();
    let t = task(&ctx, ids[0]).await;
    assert_eq!((t.state, t.exit_code), (TaskState::Killed, Some(137)));
}

#[tokio::test]
async fn a_lost_task_comes_back_with_a_message_saying_so() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = running_group(&ctx, &["n1"]).await;
    crate::tasks::node_lost(&ctx, "n1").await;
    let t = task(&ctx, ids[0]).await;
    assert_eq!(t.state, TaskState::Lost);
    assert!(t.message.unwrap().contains("went offline"));
    let still = vec![still_running(ids[0])];
    crate::reports::reconcile(&ctx, "n1", still).await.unwrap();
    let t = task(&ctx, ids[0]).await;
    assert_eq!(t.state, TaskState::Running);
    assert!(t.message.unwrap().contains("came back"));
}

/// One task of alice's, waiting in the queue; its id.
async fn queued_task(ctx: &Ctx) -> u64 {
    let spec = TaskSpec::new("img", vec!["true".into()]);
    let none = Assigned::default();
    let members = [(&spec, &none, None)];
    let now = crate::clock::now_ms();
    let ids = ctx
        .store
        .insert_batch_as("user alice", &members, now, TaskState::Queued)
        .await
        .unwrap();
    ids[0]
}

#[tokio::test]
async fn a_start_order_that_never_arrived_is_queued_again_without_its_placement() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = [queued_task(&ctx).await];
    let mut t = task(&ctx, ids[0]).await;
    t.placement = on("n1");
    change(&ctx, &mut t, Event::Placed, None).await.unwrap();
    crate::reports::reconcile(&ctx, "n1", vec![]).await.unwrap();
    let t = task(&ctx, ids[0]).await;
    assert_eq!(t.state, TaskState::Queued);
    assert!(t.placement.is_none());
}

#[tokio::test]
async fn a_stopped_vps_is_handed_on_for_its_snapshot() {
    let mut h = host().await;
    let ctx = h.ctx.clone();
    let ids = running_group(&ctx, &["n1"]).await;
    crate::reports::on_report(&ctx, "n1", ids[0], "stopped", Some(0), None)
        .await
        .unwrap();
    assert_eq!(h.stopped.try_recv().ok(), Some(ids[0]));
    let t = task(&ctx, ids[0]).await;
    assert_eq!((t.state, t.finished_at_ms), (TaskState::Stopped, None));
}

#[tokio::test]
async fn a_change_decided_on_an_old_read_never_overwrites_one_made_meanwhile() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let ids = [queued_task(&ctx).await];
    // The scheduler read it queued; its owner cancels it before the placement is stored.
    let mut read_by_scheduler = task(&ctx, ids[0]).await;
    let mut fresh = task(&ctx, ids[0]).await;
    let cancel = Event::Ended(TaskState::Killed);
    assert!(change(&ctx, &mut fresh, cancel, Some("cancelled".into()))
        .await
        .unwrap());
    read_by_scheduler.placement = on("n1");
    let e = change(&ctx, &mut read_by_scheduler, Event::Placed, None)
        .await
        .unwrap_err();
    assert!(is_stale(&e), "{e}");
    let stored = task(&ctx, ids[0]).await;
    assert_eq!(stored.state, TaskState::Killed, "the cancel stands");
    assert!(stored.placement.is_none());
}

#[tokio::test]
async fn a_cancel_overtaken_by_the_scheduler_is_decided_again_and_reaches_the_node() {
    let h = host().await;
    let ctx = h.ctx.clone();
    let mut r = crate::service_tests::Runner::join(&ctx, "n1", 4).await;
    let id = queued_task(&ctx).await;
    // Between the cancel's read (queued) and its write, a scheduling pass places the task.
    let mut placed = task(&ctx, id).await;
    placed.placement = on("n1");
    placed.state = TaskState::Assigned;
    let store = ctx.store.clone();
    *ctx.meanwhile.lock().unwrap() = Some(Box::pin(async move { store.update_task(&placed).await.unwrap() }));
    let alice = crate::service_tests::user("alice");
    let answer = crate::service_tests::answer(crate::tasks::signal(&ctx, &alice, id, Signal::Kill).await);
    // Not a conflict for the user to retry: the kill goes to the node that now has it.
    assert!(
        matches!(&answer, Response::Done { message } if message.contains("on n1")),
        "{answer:?}"
    );
    assert!(r
        .heard()
        .iter()
        .any(|m| matches!(m, HostMsg::Signal { id: s, signal: Signal::Kill } if *s == id)));
}
