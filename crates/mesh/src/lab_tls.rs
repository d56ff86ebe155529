//! TLS for the dashboard at the host's own address, with the lab's certificate (its CA's, or
//! Let's Encrypt's) rather than the cluster's: no client certificate is asked for — browsers log
//! in with a one-time link — and the files are read again when they change, so a certificate
//! renewed on disk is served without restarting the host.

use crate::tls::{provider, Identity};
use crate::MeshError;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the files' modification times are looked at, at most (on a handshake).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The server side for `cert` (a PEM chain, leaf first) and `key` (a PEM private key). An error
/// names the file and what is wrong with it.
pub fn lab_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, MeshError> {
    let resolver = Reloading::open(cert.to_owned(), key.to_owned())?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Reads the pair and checks that the key is the certificate's.
fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, MeshError> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| MeshError::Pem(format!("cannot read {}: {e}", p.display())));
    let id = Identity::from_pem(&read(cert)?, &read(key)?)
        .map_err(|e| MeshError::Pem(format!("{} / {}: {e}", cert.display(), key.display())))?;
    let certified = CertifiedKey::from_der(id.chain, id.key, &provider()).map_err(|e| {
        MeshError::Pem(format!(
            "{} and {} do not go together: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    now: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    stamps: Option<(SystemTime, SystemTime)>,
    pair: Arc<CertifiedKey>,
}

impl Reloading {
    fn open(cert: PathBuf, key: PathBuf) -> Result<Self, MeshError> {
        let stamps = stamps(&cert, &key);
        let pair = load(&cert, &key)?;
        Ok(Self {
            now: Mutex::new(Loaded {
                checked: Instant::now(),
                stamps,
                pair,
            }),
            cert,
            key,
        })
    }

    /// The pair to serve now: read again if the files changed since; a pair that does not load
    /// (a renewal half written) leaves the last good one in use.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut now = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.checked.elapsed() >= CHECK_EVERY {
            now.checked = Instant::now();
            let seen = stamps(&self.cert, &self.key);
            if seen.is_some() && seen != now.stamps {
                match load(&self.cert, &self.key) {
                    Ok(pair) => {
                        tracing::info!(cert = %self.cert.display(), "the dashboard's certificate changed on disk: serving the new one");
                        now.pair = pair;
                        now.stamps = seen;
                    }
                    Err(e) => tracing::warn!("the dashboard's certificate changed on disk but does not load (still serving the last one): {e}"),
                }
            }
        }
        now.pair.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ca = river_pki::Ca::generate("test-lab", 0).unwrap();
        let issued = ca.issue_host(&["localhost".into()], 0, 4_000_000_000).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, issued.cert_pem).unwrap();
        std::fs::write(&k, issued.key_pem).unwrap();
        (c, k)
    }

    #[test]
    fn files_that_do_not_go_together_are_refused_with_their_names() {
        let d = tempfile::tempdir().unwrap();
        let (c1, k1) = pair(d.path(), "one");
        let (_, k2) = pair(d.path(), "two");
        lab_server_config(&c1, &k1).unwrap();
        let e = lab_server_config(&c1, &k2).unwrap_err().to_string();
        assert!(e.contains("do not go together") && e.contains("one.crt"), "{e}");
        let e = lab_server_config(&d.path().join("none.crt"), &k1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("none.crt"), "{e}");
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let (c, k) = pair(d.path(), "live");
        let r = Reloading::open(c.clone(), k.clone()).unwrap();
        let first = r.current();
        let (c2, k2) = pair(d.path(), "renewed");
        std::fs::copy(&c2, &c).unwrap();
        std::fs::copy(&k2, &k).unwrap();
        r.now.lock().unwrap().checked -= CHECK_EVERY;
        r.now.lock().unwrap().stamps = None;
        let second = r.current();
        assert_ne!(first.cert, second.cert, "the renewed pair is served");
        // Half written: the last good pair stays.
        std::fs::write(&c, "not a certificate").unwrap();
        r.now.lock().unwrap().checked -= CHECK_EVERY;
        r.now.lock().unwrap().stamps = None;
        assert_eq!(r.current().cert, second.cert);
    }
}
