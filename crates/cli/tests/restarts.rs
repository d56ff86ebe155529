//! A host that crashes (`kill -9`) and comes back: its runners learn of it from the first packet
//! they send to the new process, not after their connection's idle timeout.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::time::Duration;

#[test]
fn runners_learn_of_a_crashed_host_from_its_successor_at_once() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &cfg, &listen, "crash1");
    let log = d.path().join("runner-crash1.log");

    for round in 1..=2 {
        let _ = host.0.kill();
        let _ = host.0.wait();
        host = serve(
            &d.path().join(format!("host-{round}.log")),
            &[
                "host",
                "--state-dir",
                d.path().join("host").to_str().unwrap(),
                "--listen",
                &listen,
            ],
        );
        // The restarted host answers the old connection's packets with the stateless reset its
        // predecessor promised: the runner's connection ends "reset by peer", not by timing out.
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("reset by peer")
            .count()
            < round
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round}: the runner never saw its old connection reset; it said:\n{}\nthe host said:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(d.path().join(format!("host-{round}.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        until(Duration::from_secs(60), "the runner connected to the new host", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("connected to the host")
                .count()
                > round
        });
        until(Duration::from_secs(60), "the node is online", || {
            node_online(&cfg, "crash1")
        });
    }
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("timed out"), "{said}");
}

#[test]
fn runners_are_back_within_seconds_of_a_host_that_was_down_a_while() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &cfg, &listen, "later");
    // Down for a minute (an upgrade, a reboot): the runner notices after its connection's idle
    // timeout (20 s) and keeps trying meanwhile.
    let _ = host.0.kill();
    let _ = host.0.wait();
    std::thread::sleep(Duration::from_secs(63));
    let _host = serve(
        &d.path().join("host-2.log"),
        &[
            "host",
            "--state-dir",
            d.path().join("host").to_str().unwrap(),
            "--listen",
            &listen,
        ],
    );
    let up = std::time::Instant::now();
    until(Duration::from_secs(60), "the host serves again", || {
        river(&cfg, &["whoami"]).status.success()
    });
    let serving = up.elapsed();
    // Before, its backoff had grown to 16 s by then (each attempt also waits 5 s for an answer),
    // and it came back 11–16 s after the host (up to 30 s after longer outages).
    until(Duration::from_secs(60), "the node is online", || {
        node_online(&cfg, "later")
    });
    let back = up.elapsed();
    eprintln!("host serving after {serving:?}, the node online after {back:?}");
    assert!(
        back - serving < Duration::from_secs(8),
        "the node came back {:?} after the host",
        back - serving
    );
}
