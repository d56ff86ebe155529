use super::*;

fn request(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&u32::try_from(body.len() + 5).unwrap().to_be_bytes());
    p.push(kind);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(body);
    p
}

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(b.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// Runs `requests` through a server and returns each answer's type and body.
fn run(home: &Path, requests: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
    let mut server = Server {
        handles: HashMap::new(),
        next: 0,
        home: home.to_owned(),
        opener: open::Opener::new().unwrap(),
    };
    requests
        .iter()
        .map(|r| {
            let out = server.handle(&r[4..]);
            let n = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
            assert_eq!(n, out.len() - 4, "length prefix");
            (out[4], out[5..].to_vec())
        })
        .collect()
}

fn status(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[4..8].try_into().unwrap())
}

#[test]
fn write_then_read_a_file_back() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("f.txt");
    let p = path.to_str().unwrap().as_bytes();
    let mut open = s(p);
    open.extend_from_slice(&(OPEN_WRITE | OPEN_CREAT | OPEN_TRUNC).to_be_bytes());
    open.extend_from_slice(&0u32.to_be_bytes());
    let mut server = Server {
        handles: HashMap::new(),
        next: 0,
        home: d.path().to_owned(),
        opener: open::Opener::new().unwrap(),
    };
    let opened = server.handle(&request(OPEN, 1, &open)[4..]);
    assert_eq!(opened[4], HANDLE);
    let h = opened[9..].to_vec();
    let mut write = h.clone();
    write.extend_from_slice(&0u64.to_be_bytes());
    write.extend_from_slice(&s(b"hello sftp"));
    let r = server.handle(&request(WRITE, 2, &write)[4..]);
    assert_eq!((r[4], status(&r[5..])), (STATUS, OK));
    assert_eq!(server.handle(&request(CLOSE, 3, &h)[4..])[4], STATUS);
    assert_eq!(std::fs::read(&path).unwrap(), b"hello sftp");

    let mut open = s(p);
    open.extend_from_slice(&OPEN_READ.to_be_bytes());
    open.extend_from_slice(&0u32.to_be_bytes());
    let opened = server.handle(&request(OPEN, 4, &open)[4..]);
    let h = opened[9..].to_vec();
    let mut read = h.clone();
    read.extend_from_slice(&6u64.to_be_bytes());
    read.extend_from_slice(&100u32.to_be_bytes());
    let r = server.handle(&request(READ, 5, &read)[4..]);
    assert_eq!(r[4], DATA);
    assert_eq!(&r[13..], b"sftp");
    let mut past = h.clone();
    past.extend_from_slice(&10u64.to_be_bytes());
    past.extend_from_slice(&100u32.to_be_bytes());
    let r = server.handle(&request(READ, 6, &past)[4..]);
    assert_eq!((r[4], status(&r[5..])), (STATUS, EOF));
}

#[test]
fn errors_and_malformed_requests_get_a_status() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope");
    let out = run(
        d.path(),
        &[
            request(STAT, 1, &s(missing.to_str().unwrap().as_bytes())),
            request(STAT, 2, &[0, 0, 0, 9, b'x']),
            request(READ, 3, &s(&7u32.to_be_bytes())),
            request(99, 4, &[]),
        ],
    );
    assert_eq!((out[0].0, status(&out[0].1)), (STATUS, NO_SUCH_FILE));
    assert_eq!((out[1].0, status(&out[1].1)), (STATUS, BAD_MESSAGE));
    assert_eq!((out[2].0, status(&out[2].1)), (STATUS, BAD_MESSAGE));
    assert_eq!((out[3].0, status(&out[3].1)), (STATUS, UNSUPPORTED));
}

#[test]
fn a_huge_length_ends_the_session() {
    let d = tempfile::tempdir().unwrap();
    let mut io = io::Cursor::new(Vec::new());
    io.get_mut().extend_from_slice(&u32::MAX.to_be_bytes());
    struct Both(io::Cursor<Vec<u8>>, Vec<u8>);
    impl Read for Both {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Both {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut both = Both(io, Vec::new());
    assert!(serve(&mut both, d.path(), open::Opener::new().unwrap()).is_err());
    assert!(both.1.is_empty());
}

#[test]
fn directories_list_in_batches_and_paths_resolve() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..150 {
        std::fs::write(d.path().join(format!("f{i}")), b"x").unwrap();
    }
    let mut server = Server {
        handles: HashMap::new(),
        next: 0,
        home: d.path().to_owned(),
        opener: open::Opener::new().unwrap(),
    };
    let opened = server.handle(&request(OPENDIR, 1, &s(d.path().to_str().unwrap().as_bytes()))[4..]);
    assert_eq!(opened[4], HANDLE);
    let h = opened[9..].to_vec();
    let mut names = 0;
    loop {
        let r = server.handle(&request(READDIR, 2, &h)[4..]);
        if r[4] == STATUS {
            assert_eq!(status(&r[5..]), EOF);
            break;
        }
        assert_eq!(r[4], NAME);
        names += u32::from_be_bytes(r[9..13].try_into().unwrap());
    }
    assert_eq!(names, 152, "150 files, . and ..");
    let r = server.handle(&request(REALPATH, 3, &s(b"."))[4..]);
    assert_eq!(r[4], NAME);
    let real = std::fs::canonicalize(d.path()).unwrap();
    let want = s(real.to_str().unwrap().as_bytes());
    assert_eq!(&r[13..13 + want.len()], &want[..]);
    assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
    assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
}

#[test]
fn users_come_from_passwd() {
    let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n";
    assert_eq!(
        lookup(passwd, "alice"),
        Some((1000, 1001, PathBuf::from("/home/alice")))
    );
    assert_eq!(lookup(passwd, "bob"), None);
}
