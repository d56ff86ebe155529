//! `river forward` through the binary: TCP that survives a host restart, UDP with one flow per
//! client.

use super::vps::container_pid;
use super::*;

#[test]
fn forward_through_the_binary_survives_a_host_restart() {
    if !docker_image_ready() {
        return;
    }
    let (_d, cfg, state, listen, _guard) = cluster(&[]);
    let s = state.to_str().unwrap();
    let up = ["up", "--detach", "--state-dir", s, "--listen", &listen];
    let id = running_task(
        &cfg,
        &[
            "--image",
            "river-test/busybox:1",
            "--",
            "sh",
            "-c",
            "mkdir /www && echo hello-through-river > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
        ],
    );

    let (mut fwd, local, _) = spawn_forward(&cfg, &[&id, "8080"]);
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    let page = http_get(&local, "/index.html").unwrap();
    assert!(page.contains("hello-through-river"), "{page}");
    // A second forward session to the same port at the same time: both serve, neither interferes.
    let (mut second, line2, _) = spawn_forward(&cfg, &[&id, "8080"]);
    let both: Vec<std::thread::JoinHandle<bool>> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { local.clone() } else { line2.clone() };
            std::thread::spawn(move || http_get(&addr, "/index.html").is_ok_and(|p| p.contains("hello-through-river")))
        })
        .collect();
    assert!(
        both.into_iter().all(|h| h.join().unwrap()),
        "every request through either forward"
    );
    let _ = second.kill();
    let _ = second.wait();

    // The host and runner restart (the task's container keeps running); the forward keeps
    // listening and the next connection goes through the new host.
    let o = river(&cfg, &["down", "--state-dir", s]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(river(&cfg, &up).status.success());
    wait_running(&cfg, &id);
    let mut page = String::new();
    for _ in 0..50 {
        page = http_get(&local, "/index.html").unwrap_or_default();
        if page.contains("hello-through-river") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(page.contains("hello-through-river"), "after the restart: {page:?}");

    // A port with nothing behind it: the local connection is closed, and forward says why. Every
    // time: also when the request's first bytes leave just as the refusal comes back (they met the
    // stopped stream, and the reason was lost, in about one connection in a hundred).
    let (mut bad, bad_local, said) = spawn_forward(&cfg, &[&id, "9999"]);
    assert_eq!(http_get(&bad_local, "/").unwrap_or_default(), "");
    const TRIES: u32 = 600;
    for batch in 0..TRIES / 4 {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let addr = bad_local.clone();
                // Spread over the few milliseconds the refusal takes to come back.
                let pause = Duration::from_micros(u64::from((batch * 4 + i) * 7919 % 3000));
                std::thread::spawn(move || {
                    use std::io::Write as _;
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    std::thread::sleep(pause);
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut got = Vec::new();
                    let _ = s.read_to_end(&mut got);
                    got
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), b"", "a refused connection carries nothing");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reasons = Vec::new();
    while reasons.len() < TRIES as usize + 1 {
        match said.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.starts_with("connection from") => reasons.push(l),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = bad.kill();
    let _ = bad.wait();
    assert_eq!(
        reasons.len(),
        TRIES as usize + 1,
        "one reason per connection: {reasons:?}"
    );
    let other: Vec<&String> = reasons
        .iter()
        .filter(|l| !l.contains("connection refused inside task"))
        .collect();
    assert!(
        other.is_empty(),
        "{} of {} said otherwise: {other:?}",
        other.len(),
        reasons.len()
    );
    let _ = fwd.kill();
    let _ = fwd.wait();
    let o = river(&cfg, &["forward", "9999", "80"]);
    assert!(
        !o.status.success() && text(&o).1.contains("no task 9999"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn udp_forward_carries_one_flow_per_client() {
    if !docker_image_ready() {
        return;
    }
    let (_d, cfg, _state, _listen, _guard) = cluster(&[]);
    let id = running_task(&cfg, &["--image", "river-test/busybox:1", "--", "sleep", "600"]);
    // A UDP echo server on the container's loopback, answering with who it heard from.
    let pid = container_pid(&cfg, &id);
    let mut server = Command::new("nsenter")
        .args(["-t", &pid, "-n", "python3", "-c"])
        .arg(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('127.0.0.1',5353))\n\
             while True:\n  d,a=s.recvfrom(65535)\n  s.sendto(b'%d:'%a[1]+d,a)\n",
        )
        .spawn()
        .unwrap();
    let (mut fwd, local, _) = spawn_forward(&cfg, &[&id, "5353", "--udp"]);
    let ask = |sock: &std::net::UdpSocket, msg: &[u8]| -> Option<Vec<u8>> {
        for _ in 0..20 {
            sock.send_to(msg, &local).unwrap();
            let mut buf = [0u8; 2048];
            if let Ok(n) = sock.recv(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    };
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    }
    let from_a = ask(&a, b"from-a").expect("an answer to a");
    let from_b = ask(&b, b"from-b").expect("an answer to b");
    // Each client has its own flow, so the server saw two different source ports.
    let (pa, pb) = (String::from_utf8_lossy(&from_a), String::from_utf8_lossy(&from_b));
    assert!(pa.ends_with(":from-a") && pb.ends_with(":from-b"), "{pa} {pb}");
    assert_ne!(pa.split(':').next(), pb.split(':').next(), "{pa} {pb}");
    // Many packets, in order or not, each answered.
    let mut answered = 0;
    for i in 0..200 {
        if ask(&a, format!("n{i}").as_bytes()).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 200);
    let _ = fwd.kill();
    let _ = fwd.wait();
    let _ = server.kill();
    let _ = server.wait();
}
