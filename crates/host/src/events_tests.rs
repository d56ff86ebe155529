//! Events and time in the host's services (see `service_tests.rs` for the setting): every change
//! of a task is an event, the audit log reads them, and a node's silence past its deadline is
//! reached by moving the clock on rather than by waiting.

use crate::service_tests::{host, schedule, spec, submit, task, user, Runner};
use river_task::state::TaskState;

#[tokio::test]
async fn every_change_of_a_task_is_an_event_in_order() {
    let h = host().await;
    let mut events = h.ctx.events.subscribe();
    let mut r = Runner::join(&h.ctx, "n1", 1).await;
    let a = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    r.report(&h.ctx, a, TaskState::Running, None).await;
    r.report(&h.ctx, a, TaskState::Running, None).await; // a repeat changes nothing
    r.report(&h.ctx, a, TaskState::Completed, Some(0)).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            crate::events::HostEvent::TaskChanged { id, owner, state } => {
                assert_eq!((id, owner.as_str()), (a, "user alice"));
                seen.push(state);
            }
            other => panic!("{other:?}"),
        }
    }
    use TaskState::*;
    assert_eq!(seen, vec![Queued, Assigned, Running, Completed]);
}

#[tokio::test]
async fn the_audit_log_records_nodes_coming_and_going_from_the_events() {
    let h = host().await;
    tokio::spawn(crate::events::record(h.ctx.clone(), h.ctx.events.subscribe()));
    h.ctx
        .events
        .publish(crate::events::HostEvent::NodeOffline { name: "n7".into() });
    h.ctx.events.publish(crate::events::HostEvent::NodeOnline {
        name: "n7".into(),
        why: "heartbeat".into(),
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = h.ctx.store.events(None, None, 100).await.unwrap();
        let actions: Vec<&str> = rows.iter().map(|e| e.action.as_str()).collect();
        if actions.contains(&"node.offline") && actions.contains(&"node.online") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "audit rows: {actions:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_node_silent_past_its_deadline_goes_offline_and_its_tasks_are_lost_without_waiting() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 1).await;
    let mut events = h.ctx.events.subscribe();
    let a = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    r.report(&h.ctx, a, TaskState::Running, None).await;
    // Just inside the deadline: still online.
    let deadline = std::time::Duration::from_millis(h.ctx.policy.offline_after_ms);
    h.ctx.clock.advance(deadline - std::time::Duration::from_secs(2));
    crate::registry::check_liveness(&h.ctx).await;
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Running);
    // Past it (simulated: no test sleeps 30 s).
    h.ctx.clock.advance(std::time::Duration::from_secs(4));
    crate::registry::check_liveness(&h.ctx).await;
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Lost);
    let offline = std::iter::from_fn(|| events.try_recv().ok())
        .any(|e| e == crate::events::HostEvent::NodeOffline { name: "n1".into() });
    assert!(offline, "the node's going is an event");
    let nodes = h.ctx.store.nodes().await.unwrap();
    assert_eq!(nodes[0].state, river_proto::msg::NodeState::Offline);
}
