use super::*;
use river_proto::msg::{ArchiveRef, EnvVersion, VpsSnapshot};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("river.db")).await.unwrap();
    (dir, s)
}

fn token(id: &str, uses: u32, expires_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        secret_hash: "h".into(),
        purpose: TokenPurpose::Node,
        user: None,
        created_by: "admin".into(),
        created_at: 0,
        expires_at,
        uses_left: uses,
        revoked: false,
    }
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        state: NodeState::Offline,
        address: None,
        info: NodeInfo {
            hostname: name.into(),
            cores: 4,
            ..Default::default()
        },
        usage: None,
        last_heartbeat_ms: None,
        joined_at: 10,
        cert_serial: format!("serial-{name}"),
        cert_expires_at: 1000,
    }
}

#[tokio::test]
async fn a_task_id_beyond_what_the_store_can_hold_is_no_task() {
    let (_d, s) = store().await;
    // Asked for by anyone (`GET /api/tasks/18446744073709551615`): before, a 500 "corrupt".
    assert!(s.task(u64::MAX).await.unwrap().is_none());
    assert!(s.task(1 << 63).await.unwrap().is_none());
}

#[tokio::test]
async fn a_single_use_token_joins_exactly_one_node() {
    let (_d, s) = store().await;
    s.insert_token(&token("t1", 1, 100)).await.unwrap();
    s.join_node("t1", 50, &node("a")).await.unwrap();
    assert!(matches!(
        s.join_node("t1", 50, &node("b")).await,
        Err(StoreError::TokenSpent)
    ));
    assert_eq!(s.nodes().await.unwrap().len(), 1);
    assert_eq!(s.token("t1").await.unwrap().unwrap().uses_left, 0);
}

#[tokio::test]
async fn expired_or_revoked_tokens_join_nothing() {
    let (_d, s) = store().await;
    s.insert_token(&token("old", 5, 100)).await.unwrap();
    assert!(matches!(
        s.join_node("old", 100, &node("a")).await,
        Err(StoreError::TokenSpent)
    ));
    s.insert_token(&token("rev", 5, 1000)).await.unwrap();
    assert!(s.revoke_token("rev").await.unwrap());
    assert!(matches!(
        s.join_node("rev", 50, &node("a")).await,
        Err(StoreError::TokenSpent)
    ));
}

#[tokio::test]
async fn a_taken_name_does_not_spend_the_token() {
    let (_d, s) = store().await;
    s.insert_token(&token("t", 2, 100)).await.unwrap();
    s.join_node("t", 1, &node("a")).await.unwrap();
    assert!(matches!(
        s.join_node("t", 1, &node("a")).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(s.token("t").await.unwrap().unwrap().uses_left, 1);
}

#[tokio::test]
async fn removing_a_node_revokes_its_certificate_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("river.db");
    {
        let s = Store::open(&path).await.unwrap();
        s.insert_token(&token("t", 1, 100)).await.unwrap();
        s.join_node("t", 1, &node("a")).await.unwrap();
        s.heartbeat(
            "a",
            &NodeUsage {
                cpu_percent: 12.5,
                ..Default::default()
            },
            77,
        )
        .await
        .unwrap();
        assert!(s.remove_node("a", 5).await.unwrap().is_some());
        s.close().await;
    }
    let s = Store::open(&path).await.unwrap();
    assert!(s.node("a").await.unwrap().is_none());
    assert!(s.is_revoked("serial-a").await.unwrap());
    assert!(!s.is_revoked("serial-b").await.unwrap());
    assert!(s.remove_node("a", 6).await.unwrap().is_none());
}

#[tokio::test]
async fn heartbeats_are_recorded() {
    let (_d, s) = store().await;
    s.insert_token(&token("t", 1, 100)).await.unwrap();
    s.join_node("t", 1, &node("a")).await.unwrap();
    let usage = NodeUsage {
        cpu_percent: 40.0,
        memory_used_bytes: 123,
        gpus: vec![],
        no_engine: false,
    };
    s.heartbeat("a", &usage, 5_000).await.unwrap();
    let n = s.node("a").await.unwrap().unwrap();
    assert_eq!(n.state, NodeState::Online);
    assert_eq!(n.usage, Some(usage));
    assert_eq!(n.last_heartbeat_ms, Some(5_000));
}

#[tokio::test]
async fn an_existing_user_is_never_enrolled_again_only_reissued_or_removed_with_every_old_certificate_revoked() {
    let (_d, s) = store().await;
    let cert = |serial| crate::IssuedCert {
        serial,
        expires_at: 10_000,
    };
    let ann = UserRecord {
        name: "ann".into(),
        role: Role::Operator,
        created_at: 1,
        disabled: false,
        removed_at: None,
    };
    s.enrol_user(None, 1, &ann, &cert("s1")).await.unwrap();
    // Another invite for the same name (here as a viewer) changes nothing and spends nothing.
    s.insert_token(&token("t", 1, 100)).await.unwrap();
    let again = UserRecord {
        role: Role::Viewer,
        ..ann.clone()
    };
    assert!(matches!(
        s.enrol_user(Some("t"), 2, &again, &cert("s2")).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(s.user("ann").await.unwrap().unwrap().role, Role::Operator);
    assert!(!s.is_revoked("s1").await.unwrap());
    s.renew_user_cert("ann", &cert("s3")).await.unwrap();
    // Reissued: the role stays, every earlier certificate (renewed ones too) is revoked.
    assert_eq!(s.reenrol_user("t", 3, "ann", &cert("s4")).await.unwrap(), 2);
    assert_eq!(s.user("ann").await.unwrap().unwrap().role, Role::Operator);
    assert!(s.is_revoked("s1").await.unwrap() && s.is_revoked("s3").await.unwrap());
    assert!(!s.is_revoked("s4").await.unwrap());
    // The token was one-time; a user who is not there is not made.
    assert!(matches!(
        s.reenrol_user("t", 4, "ann", &cert("s5")).await,
        Err(StoreError::TokenSpent)
    ));
    s.insert_token(&token("u", 1, 100)).await.unwrap();
    assert!(matches!(
        s.reenrol_user("u", 4, "bob", &cert("s6")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.user("bob").await.unwrap().is_none());
    // Removed: every certificate revoked, the account kept as removed, and no way back.
    s.add_user_key("ann", "k1", "ssh-ed25519 AAAA ann", "SHA256:x", 5)
        .await
        .unwrap();
    assert!(s.remove_user("ann", 6).await.unwrap());
    assert!(s.is_revoked("s4").await.unwrap());
    assert_eq!(s.user("ann").await.unwrap().unwrap().removed_at, Some(6));
    assert!(s.user_keys("ann").await.unwrap().is_empty());
    assert!(!s.remove_user("ann", 7).await.unwrap());
    s.insert_token(&token("v", 1, 100)).await.unwrap();
    assert!(matches!(
        s.reenrol_user("v", 8, "ann", &cert("s7")).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_renewed_node_is_accepted_with_its_new_and_previous_certificate_only() {
    let (_d, s) = store().await;
    s.insert_token(&token("t", 1, 100)).await.unwrap();
    s.join_node("t", 1, &node("a")).await.unwrap();
    assert_eq!(s.node_standing("a", "serial-a").await.unwrap(), Standing::Accepted);
    s.set_node_cert("a", "s2", 2000).await.unwrap();
    s.set_node_cert("a", "s3", 3000).await.unwrap();
    assert_eq!(s.node_standing("a", "s3").await.unwrap(), Standing::Accepted);
    assert_eq!(s.node_standing("a", "s2").await.unwrap(), Standing::Accepted);
    assert_eq!(s.node_standing("a", "serial-a").await.unwrap(), Standing::Unknown);
    assert_eq!(s.node_standing("b", "s3").await.unwrap(), Standing::Unknown);
    s.remove_node("a", 5).await.unwrap();
    assert!(s.is_revoked("s2").await.unwrap() && s.is_revoked("s3").await.unwrap());
    assert_eq!(s.node_standing("a", "s3").await.unwrap(), Standing::Revoked);
}

#[tokio::test]
async fn tasks_are_queued_per_target_in_one_batch_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("river.db");
    let spec = river_proto::msg::TaskSpec {
        command: vec!["true".into()],
        image: "img".into(),
        env: Default::default(),
        cores: 1,
        memory_bytes: None,
        gpus: 0,
        targets: vec!["a".into(), "b".into()],
        mounts: vec![],
        workdir: None,
        name: Some("x".into()),
        ..river_proto::msg::TaskSpec::new("img", vec!["true".into()])
    };
    let ids = {
        let s = Store::open(&path).await.unwrap();
        let ids = s.insert_tasks("ann", &spec, &spec.targets, 5).await.unwrap();
        let mut t = s.task(ids[1]).await.unwrap().unwrap();
        t.state = TaskState::Running;
        t.exit_code = Some(0);
        s.update_task(&t).await.unwrap();
        s.close().await;
        ids
    };
    let s = Store::open(&path).await.unwrap();
    assert_eq!(ids.len(), 2);
    let all = s.tasks(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|t| t.batch == ids[0] && t.owner == "ann" && t.spec == spec));
    assert_eq!(all[1].target.as_deref(), Some("b"));
    assert_eq!(s.tasks(Some("queued")).await.unwrap().len(), 1);
    assert_eq!(s.task(ids[1]).await.unwrap().unwrap().state, TaskState::Running);
}

fn version(image: &str, digest: Option<&str>) -> EnvVersion {
    EnvVersion {
        version: 1,
        image: image.into(),
        archive: digest.map(|d| ArchiveRef {
            image_id: format!("sha256:{d}"),
            digest: d.into(),
            size: 10,
        }),
        created_by: "admin".into(),
        created_at_ms: 5,
        message: None,
        fetches: 0,
    }
}

#[tokio::test]
async fn environments_version_and_share_archives() {
    let (_d, s) = store().await;
    s.create_env("py", "alice", 1, &version("python:3.12", None))
        .await
        .unwrap();
    assert!(matches!(
        s.create_env("py", "bob", 2, &version("x", None)).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        s.add_env_version("py", &version("river-env/py:v2", Some("aa")))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.add_env_version("py", &version("river-env/py:v3", Some("bb")))
            .await
            .unwrap(),
        3
    );
    s.create_env("copy", "bob", 3, &version("river-env/copy:v1", Some("bb")))
        .await
        .unwrap();
    s.count_fetch("aa").await.unwrap();

    let py = s.env("py").await.unwrap().unwrap();
    assert_eq!(py.owner, "alice");
    let numbers: Vec<u32> = py.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(py.versions[1].fetches, 1);
    assert_eq!(py.versions[1].archive.as_ref().unwrap().image_id, "sha256:aa");
    assert_eq!(s.envs().await.unwrap().len(), 2);

    // "bb" is still used by `copy`: only "aa" may be deleted.
    assert_eq!(s.remove_env("py").await.unwrap(), Some(vec!["aa".to_string()]));
    assert_eq!(s.remove_env("py").await.unwrap(), None);
    assert!(s.archive_known("bb").await.unwrap());
    assert!(!s.archive_known("aa").await.unwrap());
    assert!(s.add_env_version("py", &version("x", None)).await.is_err());
}

#[tokio::test]
async fn overlay_subnets_are_unique_kept_across_reopen_and_freed_on_removal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("river.db");
    {
        let s = Store::open(&path).await.unwrap();
        assert_eq!(s.assign_subnet("a", 1, Some("10.0.0.1")).await.unwrap(), 1);
        assert!(matches!(
            s.assign_subnet("b", 1, None).await,
            Err(StoreError::Exists(_))
        ));
        assert_eq!(s.assign_subnet("b", 2, Some("10.0.0.2")).await.unwrap(), 2);
        // A node that has one keeps it, whatever index is offered; its new address is noted.
        assert_eq!(s.assign_subnet("a", 7, Some("10.0.0.9")).await.unwrap(), 1);
        s.close().await;
    }
    let s = Store::open(&path).await.unwrap();
    assert_eq!(
        s.overlay_subnets().await.unwrap(),
        vec![
            ("a".into(), 1, Some("10.0.0.9".into())),
            ("b".into(), 2, Some("10.0.0.2".into()))
        ]
    );
    s.remove_subnet("a").await.unwrap();
    assert_eq!(s.assign_subnet("c", 1, None).await.unwrap(), 1);
}

fn reservation(ip: &str, nonce: &str, expires_at_ms: i64) -> Reservation {
    Reservation {
        ip: ip.into(),
        node: "a".into(),
        owner: "user ann".into(),
        nonce: nonce.into(),
        created_at_ms: 0,
        expires_at_ms,
        task_id: None,
    }
}

#[tokio::test]
async fn reservations_are_claimed_once_and_released_when_expired_or_their_task_ends() {
    let (_d, s) = store().await;
    s.insert_reservation(&reservation("10.128.1.2", "n1", 1_000))
        .await
        .unwrap();
    s.insert_reservation(&reservation("10.128.1.3", "n2", 1_000))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_reservation(&reservation("10.128.1.2", "n3", 5_000)).await,
        Err(StoreError::Exists(_))
    ));
    let spec = river_proto::msg::TaskSpec::new("img", vec!["true".into()]);
    let task = s.insert_tasks("ann", &spec, &[], 0).await.unwrap()[0];
    // Wrong nonce (a reissued reservation), then expired, then right: claimed once only.
    assert!(!s.claim_reservation("10.128.1.2", "other", task, 10).await.unwrap());
    assert!(!s.claim_reservation("10.128.1.2", "n1", task, 1_000).await.unwrap());
    assert!(s.claim_reservation("10.128.1.2", "n1", task, 10).await.unwrap());
    assert!(!s.claim_reservation("10.128.1.2", "n1", task, 10).await.unwrap());
    // Past the expiry: the unclaimed one goes, the claimed one stays while its task lives.
    assert_eq!(
        s.release_reservations(2_000).await.unwrap(),
        vec!["10.128.1.3".to_string()]
    );
    assert_eq!(s.reservation("10.128.1.2").await.unwrap().unwrap().task_id, Some(task));
    let mut t = s.task(task).await.unwrap().unwrap();
    t.state = TaskState::Completed;
    s.update_task(&t).await.unwrap();
    assert_eq!(
        s.release_reservations(2_000).await.unwrap(),
        vec!["10.128.1.2".to_string()]
    );
    assert!(s.reservations().await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_write_transactions_wait_for_each_other_instead_of_failing() {
    let (_d, s) = store().await;
    s.create_env("e", "ann", 0, &version("img", None)).await.unwrap();
    let mut work = tokio::task::JoinSet::new();
    for i in 0..24u64 {
        let s = s.clone();
        work.spawn(async move {
            // A transaction that reads before it writes, interleaved with other writes.
            s.add_env_version("e", &version("img", None)).await?;
            s.assign_subnet(&format!("n{i}"), i + 1, None).await?;
            s.remove_subnet(&format!("n{i}")).await
        });
    }
    while let Some(done) = work.join_next().await {
        done.unwrap().expect("no write fails because another one was under way");
    }
    assert_eq!(s.env("e").await.unwrap().unwrap().versions.len(), 25);
}

fn snapshot(vps: u64, digest: &str) -> VpsSnapshot {
    VpsSnapshot {
        vps,
        seq: 0,
        image: format!("river-vps/{vps}:1"),
        archive: ArchiveRef {
            image_id: "sha256:abc".into(),
            digest: digest.into(),
            size: 10,
        },
        node: "a".into(),
        created_by: "user ann".into(),
        created_at_ms: 5,
        message: None,
        auto: true,
    }
}

#[tokio::test]
async fn snapshots_number_per_vps_and_free_an_archive_only_when_unused() {
    let (dir, s) = store().await;
    let d1 = "1".repeat(64);
    assert_eq!(s.add_snapshot(&snapshot(7, &d1)).await.unwrap(), 1);
    assert_eq!(s.add_snapshot(&snapshot(7, &d1)).await.unwrap(), 2);
    assert_eq!(s.add_snapshot(&snapshot(8, &"2".repeat(64))).await.unwrap(), 1);
    assert!(s.archive_known(&d1).await.unwrap());
    // Two snapshots share the archive: removing one keeps it.
    assert_eq!(s.remove_snapshot(7, 1).await.unwrap(), Some(None));
    assert_eq!(s.remove_snapshot(7, 1).await.unwrap(), None, "already gone");
    s.close().await;
    let s = Store::open(&dir.path().join("river.db")).await.unwrap();
    let left = s.snapshots(7).await.unwrap();
    assert_eq!(left.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![2]);
    assert!(left[0].auto && left[0].archive.digest == d1);
    assert_eq!(s.remove_snapshot(7, 2).await.unwrap(), Some(Some(d1.clone())));
    assert!(!s.archive_known(&d1).await.unwrap());
}

#[tokio::test]
async fn a_key_names_one_user() {
    let (_d, s) = store().await;
    s.add_user_key("ann", "ssh-ed25519 AAA", "ssh-ed25519 AAA ann@x", "SHA256:a", 1)
        .await
        .unwrap();
    let again = s
        .add_user_key("bob", "ssh-ed25519 AAA", "ssh-ed25519 AAA bob", "SHA256:a", 2)
        .await;
    assert!(matches!(again, Err(StoreError::Exists(_))), "{again:?}");
    assert_eq!(s.user_by_key("ssh-ed25519 AAA").await.unwrap().as_deref(), Some("ann"));
    assert_eq!(s.user_keys("ann").await.unwrap().len(), 1);
    assert!(s.user_keys("bob").await.unwrap().is_empty());
    assert!(!s.remove_user_key("bob", "SHA256:a").await.unwrap(), "not bob's");
    assert!(s.remove_user_key("ann", "SHA256:a").await.unwrap());
    assert_eq!(s.user_by_key("ssh-ed25519 AAA").await.unwrap(), None);
}

#[tokio::test]
async fn api_tokens_are_named_once_while_live_and_die_with_their_user() {
    let (_d, s) = store().await;
    let t = |id: &str, name: &str, expires_at| crate::ApiTokenRecord {
        id: id.into(),
        user: "ann".into(),
        name: name.into(),
        role: Role::User,
        secret_hash: format!("hash-{id}"),
        created_at: 1,
        expires_at,
        last_used_ms: None,
        revoked_at: None,
    };
    s.insert_api_token(&t("a1", "ci", 100), 1).await.unwrap();
    assert!(matches!(
        s.insert_api_token(&t("a2", "ci", 100), 2).await,
        Err(StoreError::Exists(_))
    ));
    // Once expired, its name is free again (the old one is revoked on the way).
    s.insert_api_token(&t("a3", "ci", 300), 150).await.unwrap();
    assert!(s.api_token("a1").await.unwrap().unwrap().revoked_at.is_some());
    // Uses are noted, at most every 10 s.
    s.touch_api_token("a3", 20_000).await.unwrap();
    s.touch_api_token("a3", 25_000).await.unwrap();
    assert_eq!(s.api_token("a3").await.unwrap().unwrap().last_used_ms, Some(20_000));
    s.insert_api_token(&t("a4", "dash", 300), 150).await.unwrap();
    assert!(s.revoke_api_token("ann", "dash", 160).await.unwrap());
    assert!(!s.revoke_api_token("ann", "dash", 161).await.unwrap(), "revoked once");
    let listed = s.api_tokens(Some("ann")).await.unwrap();
    assert_eq!(listed[0].id, "a3", "live ones first: {listed:?}");
    assert!(s.api_tokens(Some("bob")).await.unwrap().is_empty());
    // Removing the user revokes the rest.
    s.remove_user("ann", 170).await.unwrap();
    assert!(s.api_token("a3").await.unwrap().unwrap().revoked_at.is_some());
}

#[tokio::test]
async fn a_batch_waiting_for_approval_moves_whole_and_once() {
    let (_d, s) = store().await;
    let spec = river_proto::msg::TaskSpec::new("img", vec!["true".into()]);
    let none = river_proto::msg::Assigned::default();
    let members = vec![(&spec, &none, Some("a")), (&spec, &none, Some("b"))];
    let ids = s
        .insert_batch_as("user gus", &members, 1, TaskState::PendingApproval)
        .await
        .unwrap();
    assert_eq!(s.queued_of("user gus").await.unwrap(), 2, "waiting for approval counts");
    assert!(
        s.queued(10).await.unwrap().is_empty(),
        "the scheduler's queue does not see them"
    );
    // Its owner cancels one; the decision moves the rest, and only once.
    let mut t = s.task(ids[1]).await.unwrap().unwrap();
    t.state = TaskState::Killed;
    s.update_task(&t).await.unwrap();
    let moved = s
        .move_batch(ids[0], TaskState::PendingApproval, TaskState::Queued, None, None)
        .await
        .unwrap();
    assert_eq!(moved, vec![ids[0]]);
    assert!(s
        .move_batch(ids[0], TaskState::PendingApproval, TaskState::Queued, None, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.queued(10).await.unwrap().len(), 1);
}

/// The SQL lists of states say what the task crate says: every state listed is one it calls
/// final (holding), and every such state is listed.
#[test]
fn the_sql_state_lists_match_the_task_crate() {
    let listed = |sql: &str| -> Vec<TaskState> {
        sql.trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(|s| s.trim().trim_matches('\'').parse().unwrap())
            .collect()
    };
    let ended = listed(ended!());
    let holding = listed(holding!());
    for s in TaskState::ALL {
        assert_eq!(ended.contains(&s), s.is_final(), "{s} in ended!()");
        assert_eq!(holding.contains(&s), s.holds_resources(), "{s} in holding!()");
    }
}

#[tokio::test]
async fn the_hosts_decisions_are_kept_apart_and_read_from_the_spec_in_rows_from_before() {
    let (_d, s) = store().await;
    let spec = river_proto::msg::TaskSpec::new("img", vec!["true".into()]);
    let assigned = river_proto::msg::Assigned {
        archive: None,
        ip: Some("10.128.1.5".into()),
        rank: Some(2),
    };
    let id = s.insert_batch("user a", &[(&spec, &assigned, None)], 1).await.unwrap()[0];
    let t = s.task(id).await.unwrap().unwrap();
    assert_eq!((t.spec, t.assigned), (spec.clone(), assigned.clone()));
    // A row written before `assigned_json` existed: the decisions were fields of the spec.
    let mut old = serde_json::to_value(&spec).unwrap();
    old["ip"] = "10.128.1.7".into();
    old["rank"] = 1.into();
    sqlx::query("UPDATE tasks SET spec_json = ?, assigned_json = NULL WHERE id = ?")
        .bind(old.to_string())
        .bind(i64::try_from(id).unwrap())
        .execute(&s.pool)
        .await
        .unwrap();
    let t = s.task(id).await.unwrap().unwrap();
    assert_eq!(
        (t.assigned.ip.as_deref(), t.assigned.rank),
        (Some("10.128.1.7"), Some(1))
    );
    assert_eq!(t.spec, spec, "and the spec is what the user asked");
}
