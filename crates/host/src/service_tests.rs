//! The host's services without sockets: a real SQLite store, the real scheduler pass, and runners
//! simulated in memory (what the host sends a runner arrives on a channel; what a runner would
//! report is fed to `reports`). Each case takes milliseconds; the QUIC and engine tests keep what
//! only they can show.

use crate::auth::Caller;
use crate::Ctx;
use river_proto::msg::{HostMsg, NodeInfo, Response, Role, Signal, TaskReport, TaskSpec};
use river_store::TaskRecord;
use river_task::state::TaskState;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A host's services over a fresh state directory.
pub(crate) struct Host {
    pub ctx: Arc<Ctx>,
    /// The VPSs whose stop the lifecycle handed on for a snapshot.
    pub stopped: mpsc::UnboundedReceiver<u64>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn host() -> Host {
    host_with(|_| {}).await
}

pub(crate) async fn host_with(tune: impl FnOnce(&mut crate::HostConfig)) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::HostConfig {
        state_dir: dir.path().join("host"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    tune(&mut cfg);
    let state = crate::init::prepare(&cfg).await.unwrap();
    let (ctx, stopped) = crate::context(cfg, Arc::new(state.store), state.ca).await.unwrap();
    let ctx = Arc::new(ctx);
    crate::envs::ensure_default(&ctx).await.unwrap();
    Host {
        ctx,
        stopped,
        _dir: dir,
    }
}

/// A runner simulated in memory: online, with `cores` cores, hearing what the host sends.
pub(crate) struct Runner {
    pub name: String,
    rx: mpsc::UnboundedReceiver<HostMsg>,
}

impl Runner {
    pub async fn join(ctx: &Ctx, name: &str, cores: u32) -> Self {
        Self::join_with(ctx, name, cores, |_| {}).await
    }

    /// A runner whose machine is as `tune` leaves it.
    pub async fn join_with(ctx: &Ctx, name: &str, cores: u32, tune: impl FnOnce(&mut NodeInfo)) -> Self {
        let now = crate::clock::now_ms();
        ctx.store
            .admit_node(name, "serial", i64::MAX, now / 1000)
            .await
            .unwrap();
        let info = NodeInfo {
            hostname: name.into(),
            cores,
            memory_bytes: 8 << 30,
            numa: Vec::new(),
            gpus: Vec::new(),
            version: "test".into(),
            no_engine: false,
        };
        let mut info = info;
        tune(&mut info);
        ctx.store.node_session(name, &info, "127.0.0.1", now).await.unwrap();
        Self::connect(ctx, name)
    }

    /// The same node again, after its connection dropped.
    pub fn connect(ctx: &Ctx, name: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ctx.registry.seen(name, crate::clock::now_ms());
        ctx.registry.attach_in_memory(name, tx);
        Self { name: name.into(), rx }
    }

    /// What the host has sent so far.
    pub fn heard(&mut self) -> Vec<HostMsg> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }

    /// The ids of the tasks the host has told this runner to start since last asked.
    pub fn starts(&mut self) -> Vec<u64> {
        self.heard()
            .into_iter()
            .filter_map(|m| match m {
                HostMsg::Start { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Reports task `id` in `state`, as the runner would.
    pub async fn report(&self, ctx: &Arc<Ctx>, id: u64, state: TaskState, exit_code: Option<i64>) {
        crate::reports::on_report(ctx, &self.name, id, state.as_str(), exit_code, None)
            .await
            .unwrap();
    }
}

pub(crate) fn user(name: &str) -> Caller {
    Caller::User {
        name: name.into(),
        role: Role::User,
    }
}

pub(crate) fn spec(cores: u32) -> TaskSpec {
    let mut s = TaskSpec::new("img", vec!["work".into()]);
    s.cores = cores;
    s
}

/// A service's answer as the mesh sends it: a refusal is an error response.
pub(crate) fn answer(r: crate::reply::HostResult<Response>) -> Response {
    r.unwrap_or_else(crate::reply::HostError::into_response)
}

/// Submits as `who`; the ids, or the refusal's message.
pub(crate) async fn submit(ctx: &Ctx, who: &Caller, s: TaskSpec) -> Result<Vec<u64>, String> {
    match answer(crate::submit::submit(ctx, who, s).await) {
        Response::TaskSubmitted { ids, .. } => Ok(ids),
        Response::Error { message, .. } => Err(message),
        other => panic!("{other:?}"),
    }
}

pub(crate) async fn task(ctx: &Ctx, id: u64) -> TaskRecord {
    ctx.store.task(id).await.unwrap().unwrap()
}

pub(crate) async fn schedule(ctx: &Ctx) {
    crate::tasks::schedule_once(ctx).await.unwrap();
}

#[tokio::test]
async fn a_task_is_placed_on_an_online_node_and_told_to_start_there() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 4).await;
    let ids = submit(&h.ctx, &user("alice"), spec(2)).await.unwrap();
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), ids);
    let t = task(&h.ctx, ids[0]).await;
    assert_eq!(t.state, TaskState::Assigned);
    let p = t.placement.unwrap();
    assert_eq!((p.node.as_str(), p.cores.len()), ("n1", 2));
    assert_eq!(p.owner.unwrap().name, "alice");
}

#[tokio::test]
async fn a_full_node_queues_the_rest_and_starts_it_when_cores_free_up() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 4).await;
    let a = submit(&h.ctx, &user("alice"), spec(3)).await.unwrap()[0];
    let b = submit(&h.ctx, &user("alice"), spec(3)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    assert_eq!(task(&h.ctx, b).await.state, TaskState::Queued);
    let why = crate::waiting::why(&h.ctx, &task(&h.ctx, b).await)
        .await
        .unwrap()
        .unwrap();
    assert!(why.contains("3 cores"), "{why}");
    r.report(&h.ctx, a, TaskState::Running, None).await;
    schedule(&h.ctx).await;
    assert!(r.starts().is_empty(), "its cores are still held");
    r.report(&h.ctx, a, TaskState::Completed, Some(0)).await;
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![b]);
}

#[tokio::test]
async fn cores_are_never_given_twice() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 4).await;
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.extend(submit(&h.ctx, &user("alice"), spec(1)).await.unwrap());
        }
        v
    };
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), ids);
    let mut cores: Vec<u32> = Vec::new();
    for id in &ids {
        cores.extend(task(&h.ctx, *id).await.placement.unwrap().cores);
    }
    cores.sort_unstable();
    assert_eq!(cores, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn an_offline_node_gets_nothing_and_its_tasks_wait_as_lost() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 4).await;
    let a = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    r.report(&h.ctx, a, TaskState::Running, None).await;
    h.ctx.registry.detach_in_memory("n1");
    crate::tasks::node_lost(&h.ctx, "n1").await;
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Lost);
    let b = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(task(&h.ctx, b).await.state, TaskState::Queued, "no node to run on");
    // It comes back still running the first: that one is running again, the second starts.
    let mut r = Runner::connect(&h.ctx, "n1");
    let still = vec![TaskReport {
        id: a,
        state: "running".into(),
        exit_code: None,
        message: None,
    }];
    crate::reports::reconcile(&h.ctx, "n1", still).await.unwrap();
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Running);
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![b]);
}

#[tokio::test]
async fn a_start_order_lost_with_the_connection_is_placed_again() {
    let h = host().await;
    let r = Runner::join(&h.ctx, "n1", 2).await;
    drop(r); // its channel is gone: the order cannot be delivered
    let a = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    let t = task(&h.ctx, a).await;
    assert_eq!((t.state, t.placement), (TaskState::Queued, None));
    let mut r = Runner::connect(&h.ctx, "n1");
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
}

#[tokio::test]
async fn cancelling_a_queued_task_ends_it_and_signalling_a_running_one_reaches_its_node() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 1).await;
    let alice = user("alice");
    let a = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let b = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    r.report(&h.ctx, a, TaskState::Running, None).await;
    crate::tasks::signal(&h.ctx, &alice, b, Signal::Kill).await.unwrap();
    let t = task(&h.ctx, b).await;
    assert_eq!(t.state, TaskState::Killed);
    assert!(t.message.unwrap().contains("cancelled by user alice"));
    crate::tasks::signal(&h.ctx, &alice, a, Signal::Kill).await.unwrap();
    assert!(r
        .heard()
        .iter()
        .any(|m| matches!(m, HostMsg::Signal { id, signal: Signal::Kill } if *id == a)));
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Running, "until its runner says");
}

#[tokio::test]
async fn another_user_may_neither_signal_nor_cancel_a_task() {
    let h = host().await;
    let _r = Runner::join(&h.ctx, "n1", 1).await;
    let a = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    match answer(crate::tasks::signal(&h.ctx, &user("mallory"), a, Signal::Kill).await) {
        Response::Error { message, .. } => assert!(message.contains("alice"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Queued);
}

#[tokio::test]
async fn a_task_that_can_never_run_is_refused_at_submit() {
    let h = host().await;
    let _r = Runner::join(&h.ctx, "n1", 4).await;
    let why = submit(&h.ctx, &user("alice"), spec(64)).await.unwrap_err();
    assert!(why.contains("64"), "{why}");
    let mut s = spec(1);
    s.targets = vec!["nosuch".into()];
    let why = submit(&h.ctx, &user("alice"), s).await.unwrap_err();
    assert!(why.contains("nosuch"), "{why}");
}

#[tokio::test]
async fn a_task_pinned_to_a_node_waits_for_that_node() {
    let h = host().await;
    let mut n1 = Runner::join(&h.ctx, "n1", 2).await;
    let mut n2 = Runner::join(&h.ctx, "n2", 2).await;
    let mut s = spec(1);
    s.targets = vec!["n2".into()];
    let a = submit(&h.ctx, &user("alice"), s).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert!(n1.starts().is_empty());
    assert_eq!(n2.starts(), vec![a]);
}

#[tokio::test]
async fn one_user_with_a_long_queue_does_not_hold_back_another() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 2).await;
    let alice = user("alice");
    let mut hers = Vec::new();
    for _ in 0..6 {
        hers.extend(submit(&h.ctx, &alice, spec(1)).await.unwrap());
    }
    let bob = submit(&h.ctx, &user("bob"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(
        r.starts(),
        vec![hers[0], bob],
        "bob's one task goes before alice's second"
    );
    // Turns go by what each runs: with one each, the next free core is alice's again.
    r.report(&h.ctx, bob, TaskState::Running, None).await;
    r.report(&h.ctx, bob, TaskState::Completed, Some(0)).await;
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![hers[1]]);
}

#[tokio::test]
async fn a_task_waiting_for_approval_is_not_scheduled_until_approved() {
    let h = host_with(|c| c.approval_roles = vec!["user".into()]).await;
    let mut r = Runner::join(&h.ctx, "n1", 2).await;
    let a = submit(&h.ctx, &user("guest"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert!(r.starts().is_empty());
    assert_eq!(task(&h.ctx, a).await.state, TaskState::PendingApproval);
    let op = Caller::User {
        name: "opal".into(),
        role: Role::Operator,
    };
    crate::approvals::approve(&h.ctx, &op, a).await.unwrap();
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
}

#[tokio::test]
async fn a_rejected_task_ends_killed_with_the_reason() {
    let h = host_with(|c| c.approval_roles = vec!["user".into()]).await;
    let _r = Runner::join(&h.ctx, "n1", 2).await;
    let a = submit(&h.ctx, &user("guest"), spec(1)).await.unwrap()[0];
    let op = Caller::User {
        name: "opal".into(),
        role: Role::Operator,
    };
    crate::approvals::reject(&h.ctx, &op, a, "not on this cluster")
        .await
        .unwrap();
    let t = task(&h.ctx, a).await;
    assert_eq!(t.state, TaskState::Killed);
    assert!(t.message.unwrap().contains("not on this cluster"));
    assert!(t.finished_at_ms.is_some());
}

#[tokio::test]
async fn a_removed_node_fails_what_it_ran_and_gets_nothing_more() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 2).await;
    let a = submit(&h.ctx, &user("alice"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    r.report(&h.ctx, a, TaskState::Running, None).await;
    crate::tasks::node_removed(&h.ctx, "n1").await.unwrap();
    let t = task(&h.ctx, a).await;
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.message.unwrap().contains("removed from the cluster"));
}

#[tokio::test]
async fn a_runner_report_for_a_task_of_another_node_is_ignored() {
    let h = host().await;
    let mut n1 = Runner::join(&h.ctx, "n1", 1).await;
    let n2 = Runner::join(&h.ctx, "n2", 1).await;
    let mut s = spec(1);
    s.targets = vec!["n1".into()];
    let a = submit(&h.ctx, &user("alice"), s).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(n1.starts(), vec![a]);
    n2.report(&h.ctx, a, TaskState::Completed, Some(0)).await;
    assert_eq!(task(&h.ctx, a).await.state, TaskState::Assigned);
}

#[tokio::test]
async fn task_wait_answers_at_once_when_the_state_has_moved_on_and_wakes_on_a_change() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 1).await;
    let alice = user("alice");
    let a = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let state_of = |resp: Response| match resp {
        Response::Task(v) => v.state,
        other => panic!("{other:?}"),
    };
    let long = std::time::Duration::from_secs(20);
    let answered = crate::waiting::wait(&h.ctx, &alice, a, &["running".into()], long)
        .await
        .unwrap();
    assert_eq!(state_of(answered), "queued", "not running: answered at once");
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    let past = ["queued".to_owned(), "assigned".into(), "running".into()];
    let (ctx, who) = (h.ctx.clone(), alice.clone());
    let waiter = tokio::spawn(async move { crate::waiting::wait(&ctx, &who, a, &past, long).await });
    r.report(&h.ctx, a, TaskState::Running, None).await;
    r.report(&h.ctx, a, TaskState::Completed, Some(0)).await;
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(long, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(state_of(answer), "completed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "woken, not timed out"
    );
}

#[tokio::test]
async fn a_signal_that_cannot_apply_is_refused_with_the_reason() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 1).await;
    let alice = user("alice");
    let a = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let refusal = |resp: Response| match resp {
        Response::Error { message, .. } => message,
        other => panic!("{other:?}"),
    };
    let why = refusal(answer(crate::tasks::signal(&h.ctx, &alice, a, Signal::Pause).await));
    assert!(why.contains("queued"), "{why}");
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a]);
    r.report(&h.ctx, a, TaskState::Running, None).await;
    r.report(&h.ctx, a, TaskState::Failed, Some(2)).await;
    let why = refusal(answer(crate::tasks::signal(&h.ctx, &alice, a, Signal::Kill).await));
    assert!(why.contains("already ended (failed)"), "{why}");
}

#[tokio::test]
async fn a_user_at_their_core_limit_waits_while_another_goes_first() {
    let h = host_with(|c| c.limits.running_cores = 1).await;
    let mut r = Runner::join(&h.ctx, "n1", 4).await;
    let alice = user("alice");
    let a = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let a2 = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let b = submit(&h.ctx, &user("bob"), spec(1)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a, b]);
    let why = crate::waiting::why(&h.ctx, &task(&h.ctx, a2).await)
        .await
        .unwrap()
        .unwrap();
    assert!(why.contains("limit"), "{why}");
    r.report(&h.ctx, a, TaskState::Running, None).await;
    r.report(&h.ctx, a, TaskState::Completed, Some(0)).await;
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a2]);
}

#[tokio::test]
async fn a_full_queue_refuses_more_and_says_so() {
    let h = host_with(|c| c.max_queued_per_user = 2).await;
    let alice = user("alice");
    let _r = Runner::join(&h.ctx, "n1", 1).await;
    submit(&h.ctx, &alice, spec(1)).await.unwrap();
    submit(&h.ctx, &alice, spec(1)).await.unwrap();
    let why = submit(&h.ctx, &alice, spec(1)).await.unwrap_err();
    assert!(why.contains('2'), "{why}");
    submit(&h.ctx, &user("bob"), spec(1))
        .await
        .expect("bob's queue is his own");
}

#[tokio::test]
async fn a_stopped_vps_frees_its_cores_and_starts_again_on_its_own_node() {
    let h = host().await;
    let mut n1 = Runner::join(&h.ctx, "n1", 1).await;
    let mut n2 = Runner::join(&h.ctx, "n2", 1).await;
    let alice = user("alice");
    let mut s = spec(1);
    s.targets = vec!["n1".into()];
    s.vps = Some(river_proto::msg::VpsSpec {
        ssh_keys: Vec::new(),
        image_sshd: true,
        generation: 0,
    });
    let v = submit(&h.ctx, &alice, s).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(n1.starts(), vec![v]);
    n1.report(&h.ctx, v, TaskState::Running, None).await;
    n1.report(&h.ctx, v, TaskState::Stopped, Some(0)).await;
    // Its core is free for others meanwhile.
    let mut other = spec(1);
    other.targets = vec!["n1".into()];
    let t = submit(&h.ctx, &alice, other).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(n1.starts(), vec![t]);
    n1.report(&h.ctx, t, TaskState::Running, None).await;
    n1.report(&h.ctx, t, TaskState::Completed, Some(0)).await;
    crate::vps::start(&h.ctx, &alice, v, None).await.unwrap();
    let back = task(&h.ctx, v).await;
    assert_eq!((back.state, back.target.as_deref()), (TaskState::Queued, Some("n1")));
    schedule(&h.ctx).await;
    assert!(n2.starts().is_empty(), "its disk is on n1");
    assert_eq!(n1.starts(), vec![v]);
}

#[tokio::test]
async fn container_tasks_go_only_where_an_engine_answers() {
    let h = host().await;
    let mut bare = Runner::join_with(&h.ctx, "bare", 8, |i| i.no_engine = true).await;
    let mut docker = Runner::join(&h.ctx, "docker", 1).await;
    let alice = user("alice");
    let c1 = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let c2 = submit(&h.ctx, &alice, spec(1)).await.unwrap()[0];
    let mut p = spec(1);
    p.no_container = true;
    p.image = String::new();
    let p = submit(&h.ctx, &alice, p).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(docker.starts(), vec![c1]);
    assert_eq!(bare.starts(), vec![p], "a process task may run where no engine is");
    let why = crate::waiting::why(&h.ctx, &task(&h.ctx, c2).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task(&h.ctx, c2).await.state, TaskState::Queued, "{why}");
}

#[tokio::test]
async fn memory_is_a_resource_like_cores() {
    let h = host().await;
    let mut r = Runner::join(&h.ctx, "n1", 8).await;
    let big = |gib: u64| {
        let mut s = spec(1);
        s.memory_bytes = Some(gib << 30);
        s
    };
    let a = submit(&h.ctx, &user("alice"), big(6)).await.unwrap()[0];
    let b = submit(&h.ctx, &user("alice"), big(6)).await.unwrap()[0];
    schedule(&h.ctx).await;
    assert_eq!(r.starts(), vec![a], "8 GiB hold one 6 GiB task, not two");
    assert_eq!(task(&h.ctx, b).await.state, TaskState::Queued);
    let why = submit(&h.ctx, &user("alice"), big(64)).await.unwrap_err();
    assert!(why.contains("memory") || why.contains("GiB"), "{why}");
}
