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
