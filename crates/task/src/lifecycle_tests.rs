use super::*;
use TaskState::*;

fn life(state: TaskState) -> Life {
    Life {
        state,
        started_at_ms: None,
        finished_at_ms: None,
        exit_code: None,
        grouped: false,
        addressed: false,
    }
}

fn member(state: TaskState) -> Life {
    Life {
        grouped: true,
        addressed: true,
        ..life(state)
    }
}

#[test]
fn a_task_runs_and_completes_with_its_times_and_exit_code() {
    let (l, fx) = apply(life(Queued), Event::Placed, 10).unwrap();
    assert_eq!((l.state, fx), (Assigned, vec![]));
    let (l, _) = apply(
        l,
        Event::Reported {
            state: Running,
            exit_code: None,
        },
        20,
    )
    .unwrap();
    assert_eq!((l.state, l.started_at_ms), (Running, Some(20)));
    let (l, fx) = apply(
        l,
        Event::Reported {
            state: Completed,
            exit_code: Some(0),
        },
        30,
    )
    .unwrap();
    assert_eq!(
        (l.state, l.started_at_ms, l.finished_at_ms, l.exit_code),
        (Completed, Some(20), Some(30), Some(0))
    );
    assert_eq!(fx, vec![Effect::Schedule], "its cores are free");
}

#[test]
fn a_second_start_keeps_the_first_start_time() {
    let l = Life {
        started_at_ms: Some(5),
        ..life(Paused)
    };
    let (l, _) = apply(
        l,
        Event::Reported {
            state: Running,
            exit_code: None,
        },
        50,
    )
    .unwrap();
    assert_eq!(l.started_at_ms, Some(5));
}

#[test]
fn a_group_member_that_fails_ends_its_group_however_it_failed() {
    let ends = [
        Event::Reported {
            state: Failed,
            exit_code: Some(3),
        },
        Event::Reported {
            state: Oom,
            exit_code: Some(137),
        },
        Event::Ended(Failed),
        Event::Ended(Killed),
    ];
    for e in ends {
        let (_, fx) = apply(member(Running), e, 1).unwrap();
        assert!(fx.contains(&Effect::EndGroup), "{e:?}: {fx:?}");
        assert!(fx.contains(&Effect::ReleaseAddress), "{e:?}: {fx:?}");
    }
    let (_, fx) = apply(member(Queued), Event::Ended(Killed), 1).unwrap();
    assert!(
        fx.contains(&Effect::EndGroup),
        "a cancelled queued member ends the rest too"
    );
}

#[test]
fn a_completed_member_or_one_ended_by_its_group_ends_no_one_else() {
    let (_, fx) = apply(
        member(Running),
        Event::Reported {
            state: Completed,
            exit_code: Some(0),
        },
        1,
    )
    .unwrap();
    assert!(!fx.contains(&Effect::EndGroup));
    let (l, fx) = apply(member(Running), Event::GroupEnded, 1).unwrap();
    assert_eq!(l.state, Killed);
    assert!(!fx.contains(&Effect::EndGroup), "no echo back to the group: {fx:?}");
    assert!(fx.contains(&Effect::ReleaseAddress));
}

#[test]
fn a_task_alone_ends_no_group() {
    let (_, fx) = apply(life(Running), Event::Ended(Failed), 1).unwrap();
    assert_eq!(fx, vec![Effect::Schedule]);
}

#[test]
fn a_lost_node_loses_only_what_it_holds() {
    for s in [Assigned, Running, Paused] {
        assert_eq!(apply(life(s), Event::NodeLost, 1).unwrap().0.state, Lost, "{s:?}");
    }
    for s in [Queued, Stopped, Completed, Lost, PendingApproval] {
        let (l, fx) = apply(life(s), Event::NodeLost, 1).unwrap();
        assert_eq!((l, fx), (life(s), vec![]), "{s:?} is not touched");
    }
}

#[test]
fn a_task_back_in_the_queue_loses_its_placement_and_its_last_end() {
    let (l, fx) = apply(life(Assigned), Event::Requeued, 1).unwrap();
    assert_eq!(l.state, Queued);
    assert_eq!(fx, vec![Effect::Unplace, Effect::Schedule]);
    let stopped = Life {
        finished_at_ms: Some(9),
        exit_code: Some(0),
        ..life(Stopped)
    };
    let (l, _) = apply(stopped, Event::Requeued, 10).unwrap();
    assert_eq!((l.state, l.finished_at_ms, l.exit_code), (Queued, None, None));
}

#[test]
fn an_approved_task_is_queued_without_losing_anything() {
    let (l, fx) = apply(life(PendingApproval), Event::Approved, 1).unwrap();
    assert_eq!((l.state, fx), (Queued, vec![Effect::Schedule]));
    let (l, fx) = apply(member(PendingApproval), Event::Ended(Killed), 1).unwrap();
    assert_eq!(l.state, Killed);
    assert!(
        fx.contains(&Effect::ReleaseAddress),
        "rejected: its promised address goes back"
    );
}

#[test]
fn a_stopped_vps_is_heard_and_frees_its_cores() {
    let (l, fx) = apply(
        life(Running),
        Event::Reported {
            state: Stopped,
            exit_code: None,
        },
        1,
    )
    .unwrap();
    assert_eq!(l.state, Stopped);
    assert_eq!(fx, vec![Effect::VpsStopped, Effect::Schedule]);
    assert_eq!(l.finished_at_ms, None, "a stopped VPS has not ended");
}

#[test]
fn a_repeated_report_changes_nothing_and_a_forbidden_one_is_refused() {
    let (l, fx) = apply(
        life(Running),
        Event::Reported {
            state: Running,
            exit_code: None,
        },
        1,
    )
    .unwrap();
    assert_eq!((l, fx), (life(Running), vec![]));
    let e = apply(
        life(Killed),
        Event::Reported {
            state: Running,
            exit_code: None,
        },
        1,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "a killed task cannot become running");
    assert!(apply(life(Queued), Event::Requeued, 1).unwrap().1.is_empty());
    assert!(apply(life(Completed), Event::GroupEnded, 1).is_err());
}
