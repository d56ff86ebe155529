use super::*;

/// A node with `numa` NUMA nodes of `per` cores each, and GPUs split evenly across them.
fn node(name: &str, numa: u32, per: u32, gpus: u32) -> Node {
    Node {
        name: name.into(),
        online: true,
        memory: 64 << 30,
        numa: (0..numa)
            .map(|id| Numa {
                id,
                cpus: (id * per..(id + 1) * per).collect(),
            })
            .collect(),
        gpus: (0..gpus)
            .map(|i| GpuSlot {
                index: i,
                numa: Some(i * numa / gpus.max(1)),
            })
            .collect(),
        containers: true,
    }
}

fn ask(cores: u32, gpus: u32) -> Ask {
    Ask {
        cores,
        memory: 1 << 30,
        gpus,
        target: None,
        container: true,
    }
}

fn at(target: &str, cores: u32) -> Ask {
    Ask {
        target: Some(Target::parse(target).unwrap()),
        ..ask(cores, 0)
    }
}

#[test]
fn impossible_requests_are_refused_with_the_reason() {
    let nodes = [node("a", 2, 4, 2)];
    let cases = [
        (at("b", 1), "no node named b"),
        (at("a:2", 1), "no NUMA node 2 (it has 0, 1)"),
        (at("a::5", 1), "no GPU 5 (it has 0, 1)"),
        (at("a:0", 5), "asks for 5 cores but node a has 4 on NUMA node 0"),
        (ask(9, 0), "asks for 9 cores but node a has 8"),
        (ask(1, 3), "asks for 3 GPUs but node a has 2"),
        (
            Ask {
                memory: 1 << 40,
                ..ask(1, 0)
            },
            "asks for 1 TiB of memory",
        ),
        (ask(0, 0), "at least one core"),
        (
            Ask {
                gpus: 2,
                ..at("a::0", 1)
            },
            "does not match",
        ),
    ];
    for (a, why) in cases {
        let e = check(&a, &nodes).unwrap_err();
        assert!(e.contains(why), "{a:?}: {e}");
    }
    assert!(check(&ask(8, 2), &nodes).is_ok());
    assert!(check(&ask(1, 0), &[]).unwrap_err().contains("no nodes"));
}

#[test]
fn a_numa_target_takes_cores_from_that_numa_node() {
    let n = node("a", 2, 4, 0);
    let p = place_on(&at("a:1", 3), &n, &Usage::default()).unwrap();
    assert_eq!((p.numa, p.cores), (Some(1), vec![4, 5, 6]));
}

#[test]
fn cores_stay_on_one_numa_node_when_they_fit_and_spread_otherwise() {
    let n = node("a", 2, 4, 0);
    let mut used = Usage::default();
    used.cores.extend([0, 1]);
    // 3 cores: NUMA 0 has only 2 free, NUMA 1 has 4.
    let p = place_on(&ask(3, 0), &n, &used).unwrap();
    assert_eq!(p.numa, Some(1));
    // 6 cores fit on no single NUMA node: spread, no NUMA binding.
    let p = place_on(&ask(6, 0), &n, &used).unwrap();
    assert_eq!((p.numa, p.cores.len()), (None, 6));
    assert!(p.cores.iter().all(|c| !used.cores.contains(c)));
    // ...unless a NUMA node was asked for.
    assert!(place_on(&at("a:0", 3), &n, &used).is_none());
}

#[test]
fn gpus_come_with_cores_on_their_numa_node() {
    // GPUs 0,1 on NUMA 0; 2,3 on NUMA 1.
    let n = node("a", 2, 4, 4);
    let mut used = Usage::default();
    used.gpus.insert(0);
    let p = place_on(&ask(2, 2), &n, &used).unwrap();
    assert_eq!(p.gpus, vec![2, 3]);
    assert_eq!(p.numa, Some(1));
    assert!(p.cores.iter().all(|c| (4..8).contains(c)));
}

#[test]
fn named_gpus_must_all_be_free() {
    let n = node("a", 1, 8, 4);
    let mut used = Usage::default();
    used.gpus.insert(1);
    assert!(place_on(&at("a::0,1", 1), &n, &used).is_none());
    assert_eq!(place_on(&at("a::2,3", 1), &n, &used).unwrap().gpus, vec![2, 3]);
}

#[test]
fn memory_is_counted() {
    let n = node("a", 1, 8, 0);
    let used = Usage {
        memory: 63 << 30,
        ..Default::default()
    };
    assert!(place_on(
        &Ask {
            memory: 2 << 30,
            ..ask(1, 0)
        },
        &n,
        &used
    )
    .is_none());
}

#[test]
fn a_busy_cluster_queues_and_starts_in_order() {
    let nodes = [node("a", 1, 4, 0)];
    let queue: Vec<(u32, Ask)> = (0..6).map(|i| (i, ask(1, 0))).collect();
    let mut used = BTreeMap::new();
    let started: Vec<u32> = schedule(&queue, &nodes, &mut used)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(started, vec![0, 1, 2, 3], "four cores, four tasks, in order; two wait");
    // Two finish; the next two in line start.
    let u = used.get_mut("a").unwrap();
    u.cores.remove(&0);
    u.cores.remove(&1);
    let rest = &queue[4..];
    let started: Vec<u32> = schedule(rest, &nodes, &mut used)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(started, vec![4, 5]);
}

#[test]
fn small_tasks_backfill_but_never_starve_the_head() {
    let nodes = [node("a", 1, 8, 0), node("b", 1, 8, 0)];
    let mut used = BTreeMap::new();
    used.insert(
        "a".to_string(),
        Usage {
            cores: (0..4).collect(),
            ..Default::default()
        },
    );
    used.insert(
        "b".to_string(),
        Usage {
            cores: (0..2).collect(),
            ..Default::default()
        },
    );
    // The head needs a whole node: neither has 8 free. It reserves b (the most free), so the small
    // tasks behind it go to a only.
    let queue = vec![(0, ask(8, 0)), (1, ask(2, 0)), (2, ask(2, 0)), (3, ask(2, 0))];
    let placed = schedule(&queue, &nodes, &mut used);
    let ids: Vec<u32> = placed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![1, 2], "backfilled onto a");
    assert!(
        placed.iter().all(|(_, p)| p.node == "a"),
        "nothing may take the head's node: {placed:?}"
    );
}

#[test]
fn offline_nodes_get_nothing_and_targets_are_honoured() {
    let mut b = node("b", 1, 4, 0);
    b.online = false;
    let nodes = [node("a", 1, 4, 0), b];
    let mut used = BTreeMap::new();
    let placed = schedule(&[(0, at("b", 1)), (1, ask(1, 0)), (2, at("a", 1))], &nodes, &mut used);
    let got: Vec<(u32, &str)> = placed.iter().map(|(i, p)| (*i, p.node.as_str())).collect();
    assert_eq!(got, vec![(1, "a"), (2, "a")]);
}

#[test]
fn packing_keeps_whole_gpu_nodes_free() {
    let nodes = [node("a", 1, 8, 8), node("b", 1, 8, 8)];
    let mut used = BTreeMap::new();
    used.insert(
        "b".to_string(),
        Usage {
            gpus: (0..4).collect(),
            ..Default::default()
        },
    );
    let placed = schedule(&[(0, ask(1, 2))], &nodes, &mut used);
    assert_eq!(placed[0].1.node, "b", "the partly used node, leaving a whole");
    // An 8-GPU task can now still start on a.
    assert_eq!(schedule(&[(1, ask(1, 8))], &nodes, &mut used)[0].1.node, "a");
}

#[test]
fn containers_go_only_where_an_engine_answers_and_processes_anywhere() {
    let mut bare = node("bare", 1, 8, 0);
    bare.containers = false;
    let docker = node("docker", 1, 2, 0);
    let nodes = [bare.clone(), docker.clone()];
    // A container task that would fit the bigger node goes to the one with an engine.
    let mut used = BTreeMap::new();
    let placed = schedule(&[(1, ask(2, 0))], &nodes, &mut used);
    assert_eq!(placed[0].1.node, "docker");
    // Asked for there, or with no engine anywhere: refused with the reason.
    let mut there = ask(1, 0);
    there.target = Some(Target::parse("bare").unwrap());
    assert!(check(&there, &nodes).unwrap_err().contains("no container engine"));
    assert!(check(&ask(1, 0), std::slice::from_ref(&bare))
        .unwrap_err()
        .contains("no container engine"));
    // A process task runs there.
    let mut process = ask(8, 0);
    process.container = false;
    assert!(check(&process, &nodes).is_ok());
    let placed = schedule(&[(2, process)], &nodes, &mut BTreeMap::new());
    assert_eq!(placed[0].1.node, "bare");
}
