//! VPS files through the binary: scp, SFTP and plain ssh through the SSH gateway, and what SFTP
//! may not open.

use super::vps::vps_ssh;
use super::*;

/// An OpenSSH client config for these tests: `ssh-config`'s stanza for `river-ID`, the key, no
/// host-key prompts and messages at INFO (so a refused channel's reason shows).
fn ssh_config_file(cfg: &Path, key: &Path) -> std::path::PathBuf {
    let o = river(cfg, &["ssh-config"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let file = cfg
        .parent()
        .unwrap()
        .join(format!("ssh_config_{}", key.file_name().unwrap().to_string_lossy()));
    let common = format!(
        "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n",
        key.display()
    );
    std::fs::write(&file, format!("{}\n{common}", text(&o).0)).unwrap();
    file
}

fn openssh(program: &str, config: &Path, args: &[&str]) -> Output {
    output_within(Command::new(program).arg("-F").arg(config).args(args))
}

#[test]
fn vps_files_by_scp_and_sftp_and_plain_ssh_through_the_gateway() {
    if !docker_image_ready() {
        return;
    }
    let (d, cfg, _state, listen, _guard) = cluster(&[]);
    let ssh_dir = d.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("id_ed25519");
    keygen(&key, "gw-key");
    let o = river(&cfg, &["vps", "create", "--image", "river-test/busybox:1", "--wait"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();
    let conf = ssh_config_file(&cfg, &key);
    let host = format!("river-{id}");

    // scp both ways into an image with no sftp-server and no scp: bytes intact.
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = d.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();
    let o = openssh("scp", &conf, &[up.to_str().unwrap(), &format!("{host}:/root/up.bin")]);
    assert!(o.status.success(), "{:?}", text(&o));
    let down = d.path().join("down.bin");
    let o = openssh("scp", &conf, &[&format!("{host}:up.bin"), down.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        std::fs::read(&down).unwrap() == data,
        "scp round trip changed the bytes"
    );
    // Paths are the container's: the node's own files cannot be named.
    let o = openssh("scp", &conf, &[&format!("{host}:{}", up.display()), "/dev/null"]);
    assert!(!o.status.success(), "read a node file through a VPS: {:?}", text(&o));
    // sftp: directories, rename, listing.
    let batch = d.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir work\ncd work\nput {} a.bin\nrename a.bin b.bin\nls -l\n",
            up.display()
        ),
    )
    .unwrap();
    let o = openssh("sftp", &conf, &["-b", batch.to_str().unwrap(), &host]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("1500000 b.bin"), "{:?}", text(&o));
    let o = vps_ssh(&cfg, &id, &key, &["wc -c < /root/work/b.bin"]);
    assert_eq!(text(&o).0.trim(), "1500000", "{:?}", text(&o));

    // The gateway, with nothing but OpenSSH: the key must be registered to a river user.
    let jump = format!("river@{listen}");
    let target = format!("root@vps-{id}");
    let o = openssh("ssh", &conf, &["-J", &jump, &target, "echo via-gateway; exit 5"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    let key_pub = key.with_extension("pub");
    let o = river(&cfg, &["user", "key", "add", key_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&cfg, &["user", "key", "list"]);
    assert!(text(&o).0.contains("gw-key"), "{:?}", text(&o));
    let o = openssh("ssh", &conf, &["-J", &jump, &target, "echo via-gateway; exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{:?}", text(&o));
    assert_eq!(text(&o).0, "via-gateway\n");
    // Logging in to the gateway itself only says how to use it.
    let port = listen.rsplit_once(':').unwrap().1;
    let o = openssh("ssh", &conf, &["-p", port, "river@127.0.0.1"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("jump host"), "{:?}", text(&o));
    // The HTTPS API still answers on the same port.
    let o = Command::new("curl")
        .args(["-sk", &format!("https://{listen}/api/health")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"), "{o:?}");

    // Another user, with their own registered key, may not reach this VPS.
    let o = river(&cfg, &["user", "invite", "bob", "--role", "user", "--ttl", "10m"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let bob = d.path().join("bob");
    let o = river(&bob, &["login", &listen, "--token", text(&o).0.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let bob_key = d.path().join("bob_key");
    keygen(&bob_key, "gw-key");
    let bob_pub = bob_key.with_extension("pub");
    // A key names one user.
    let o = river(&cfg, &["user", "key", "add", key_pub.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).1.contains("already registered"),
        "{:?}",
        text(&o)
    );
    let o = river(&bob, &["user", "key", "add", bob_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let bob_conf = ssh_config_file(&cfg, &bob_key);
    let o = openssh("ssh", &bob_conf, &["-J", &jump, &target, "true"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    assert!(text(&o).1.contains("belongs to user admin"), "{:?}", text(&o));
    // Removing the key closes the gateway to it.
    let o = river(&cfg, &["user", "key", "rm", key_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = openssh("ssh", &conf, &["-J", &jump, &target, "true"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
}

/// A loop device over a file, detached when dropped: a disk of the node's that tests may read.
struct LoopDisk(String);

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

#[test]
fn vps_sftp_opens_no_device_the_container_may_not() {
    if !docker_image_ready() {
        return;
    }
    let (d, cfg, _state, listen, _guard) = cluster(&[]);
    // The node's disk, as far as this test goes: a loop device holding a marker.
    let marker = format!("node-disk-{}", rand::random::<u32>());
    let mut bytes = marker.clone().into_bytes();
    bytes.resize(1 << 20, 0);
    let image = d.path().join("disk.img");
    std::fs::write(&image, &bytes).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "losetup: {:?}", text(&o));
    let disk = LoopDisk(text(&o).0.trim().to_owned());
    let o = Command::new("stat").args(["-c", "%t %T", &disk.0]).output().unwrap();
    let numbers: Vec<u32> = text(&o)
        .0
        .split_whitespace()
        .map(|h| u32::from_str_radix(h, 16).unwrap())
        .collect();
    let (major, minor) = (numbers[0], numbers[1]);

    // A plain user with a VPS.
    let o = river(&cfg, &["user", "invite", "mal", "--role", "user", "--ttl", "10m"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let mal = d.path().join("mal").join("cfg");
    let o = river(&mal, &["login", &listen, "--token", text(&o).0.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let key = d.path().join("mal_key");
    keygen(&key, "mal");
    let key_pub = key.with_extension("pub");
    let o = river(
        &mal,
        &[
            "vps",
            "create",
            "--image",
            "river-test/busybox:1",
            "--ssh-key",
            key_pub.to_str().unwrap(),
            "--wait",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();

    // Root in the VPS may make the device node, but the container may not read it…
    let o = vps_ssh(
        &mal,
        &id,
        &key,
        &[&format!(
            "mknod /root/disk b {major} {minor} && echo made; head -c 64 /root/disk || echo refused-inside"
        )],
    );
    let (out, err) = text(&o);
    assert!(out.contains("made") && out.contains("refused-inside"), "{out} {err}");
    assert!(!out.contains(&marker), "the container itself read the disk: {out}");
    // …and neither may the SFTP server the runner serves the VPS with. (OpenSSH's `sftp` would
    // not ask it to: it downloads only what stat calls a regular file. A client that asks.)
    let conf = ssh_config_file(&mal, &key);
    let answer = sftp_read(&conf, &format!("river-{id}"), "/root/disk");
    assert!(
        !String::from_utf8_lossy(&answer).contains(&marker),
        "SFTP read the node's disk through a device node"
    );
    assert!(
        String::from_utf8_lossy(&answer).contains("not a regular file"),
        "the server says why: {}",
        String::from_utf8_lossy(&answer)
    );
    // A regular file still reads.
    let o = vps_ssh(&mal, &id, &key, &[&format!("echo {marker}-file > /root/plain")]);
    assert!(o.status.success(), "{:?}", text(&o));
    let answer = sftp_read(&conf, &format!("river-{id}"), "/root/plain");
    assert!(String::from_utf8_lossy(&answer).contains(&format!("{marker}-file")));
}

/// Speaks SFTP itself over `ssh -s HOST sftp`: INIT, OPEN `path` to read, READ 64 bytes from
/// it. Returns the body of the last answer (the data, or a status with its message). Bounded by
/// [`COMMAND_LIMIT`].
fn sftp_read(config: &Path, host: &str, path: &str) -> Vec<u8> {
    use std::io::Write as _;
    let packet = |body: &[u8]| {
        let mut p = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        p.extend_from_slice(body);
        p
    };
    let string = |b: &[u8]| {
        let mut v = u32::try_from(b.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(["-s", host, "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut answer = || -> std::io::Result<(u8, Vec<u8>)> {
            let mut len = [0u8; 4];
            output.read_exact(&mut len)?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            output.read_exact(&mut body)?;
            Ok((body[0], body[1..].to_vec()))
        };
        let mut exchange = || -> std::io::Result<Vec<u8>> {
            input.write_all(&packet(&[1, 0, 0, 0, 3]))?; // INIT, version 3
            answer()?;
            let mut open = vec![3, 0, 0, 0, 1]; // OPEN, id 1
            open.extend(string(path.as_bytes()));
            open.extend([0, 0, 0, 1, 0, 0, 0, 0]); // read; no attributes
            input.write_all(&packet(&open))?;
            let (kind, body) = answer()?;
            if kind != 102 {
                return Ok(body); // a status: refused
            }
            let mut read = vec![5, 0, 0, 0, 2]; // READ, id 2
            read.extend_from_slice(&body[4..]); // the handle, as sent (a string)
            read.extend([0u8; 8]); // offset 0
            read.extend(64u32.to_be_bytes());
            input.write_all(&packet(&read))?;
            Ok(answer()?.1)
        };
        let _ = tx.send(exchange());
    });
    let got = rx.recv_timeout(COMMAND_LIMIT);
    let _ = child.kill();
    let _ = child.wait();
    got.expect("the SFTP exchange finished in time")
        .expect("the SFTP exchange")
}
