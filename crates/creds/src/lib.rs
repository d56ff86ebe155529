//! Credential bundles on disk: a directory with the cluster CA, a certificate, its private key
//! (mode 0600) and where the host is. The host writes one for the first admin, a runner keeps its
//! node identity in one, and the CLI reads one for the user.
//!
//! Every write goes to a temporary file that is renamed into place, so a crash never leaves a
//! half-written key, and key files are created 0600 (never chmod-ed after the fact).

mod lock;
pub use lock::{LockError, StateLock};

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const META_FILE: &str = "cluster.toml";

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("no river credentials in {0}; join with `river runner --join HOST:PORT --token TOKEN` or log in with `river login HOST:PORT --token TOKEN`")]
    Missing(PathBuf),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32 },
}

/// Where the host is, and whose credential this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `HOST:PORT` of the host's mesh endpoint.
    pub host: String,
    /// The identity the certificate carries ("node gpu-01", "user ann").
    pub name: String,
}

/// A loaded bundle. `Debug` hides the key.
#[derive(Clone)]
pub struct Bundle {
    pub meta: Meta,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("meta", &self.meta)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CredsError + '_ {
    move |error| CredsError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Writes `data` to `path` through a temporary file and a rename, with `mode` from creation.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CredsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Makes a directory that only its owner can enter.
pub fn private_dir(dir: &Path) -> Result<(), CredsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

fn read(path: &Path) -> Result<String, CredsError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Reads a private key, refusing one that others can read.
pub fn read_key(path: &Path) -> Result<String, CredsError> {
    let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CredsError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    read(path)
}

impl Bundle {
    pub fn exists(dir: &Path) -> bool {
        dir.join(CERT_FILE).exists() && dir.join(KEY_FILE).exists()
    }

    pub fn load(dir: &Path) -> Result<Self, CredsError> {
        if !Self::exists(dir) {
            return Err(CredsError::Missing(dir.to_owned()));
        }
        let meta_path = dir.join(META_FILE);
        let meta = toml::from_str(&read(&meta_path)?).map_err(|e| CredsError::Invalid {
            path: meta_path,
            msg: e.to_string(),
        })?;
        Ok(Self {
            meta,
            ca_pem: read(&dir.join(CA_FILE))?,
            cert_pem: read(&dir.join(CERT_FILE))?,
            key_pem: read_key(&dir.join(KEY_FILE))?,
        })
    }

    pub fn save(&self, dir: &Path) -> Result<(), CredsError> {
        private_dir(dir)?;
        write_atomic(&dir.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        // The key first: a certificate on disk is useless without it.
        write_atomic(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        let meta = toml::to_string(&self.meta).map_err(|e| CredsError::Invalid {
            path: dir.join(META_FILE),
            msg: e.to_string(),
        })?;
        write_atomic(&dir.join(META_FILE), meta.as_bytes(), 0o644)
    }

    /// Forgets the credentials in `dir`: the key first, then the certificate, the CA and the
    /// cluster's address. Files already gone are no error.
    pub fn remove(dir: &Path) -> Result<(), CredsError> {
        for f in [KEY_FILE, CERT_FILE, CA_FILE, META_FILE] {
            let path = dir.join(f);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    /// The CA certificate as DER.
    pub fn ca_der(&self) -> Result<Vec<u8>, river_pki::PkiError> {
        river_pki::pem_to_der(&self.ca_pem)
    }

    /// What the certificate says about itself.
    pub fn cert_info(&self) -> Result<river_pki::CertInfo, river_pki::PkiError> {
        river_pki::inspect(&river_pki::pem_to_der(&self.cert_pem)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_keys_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bundle {
            meta: Meta {
                host: "127.0.0.1:7443".into(),
                name: "user ann".into(),
            },
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "secret".into(),
        };
        b.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Bundle::load(dir.path()).unwrap().key_pem, "secret");
        assert!(!format!("{b:?}").contains("secret"));
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_atomic(&p, b"k", 0o644).unwrap();
        assert!(matches!(read_key(&p), Err(CredsError::Exposed { .. })));
    }

    #[test]
    fn missing_bundle_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("river login"), "{e}");
    }
}
