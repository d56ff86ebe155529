//! The host's secrets on disk: 32-byte keys made on first use, and the SSH host keys (the
//! gateway's and each VPS's) derived from one of them, so they survive restarts.

use anyhow::Context as _;
use river_proto::msg::Secret;
use std::path::Path;

/// A new random secret for a credential: 32 bytes, base64url (fits a URL, a cookie, a header).
pub(crate) fn new_secret() -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    B64.encode(bytes)
}

/// A new credential that reads `ID.SECRET` (an API token, a dashboard session): a public id it is
/// looked up by (12 hex digits) and its secret.
pub(crate) fn new_credential() -> (String, String) {
    let mut id = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    (hex::encode(id), new_secret())
}

/// What the host keeps of a credential's secret: its SHA-256, hex.
pub(crate) fn secret_hash(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// 32 random bytes kept in `path` (0600), made on first use. `consequence` says what removing the
/// file would break, for the error on a damaged one.
pub(crate) fn secret_file(path: &Path, consequence: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::read(path) {
        Ok(b) if b.len() == 32 => Ok(b),
        Ok(_) => anyhow::bail!(
            "{} is not a 32-byte key; remove it to make a new one ({consequence})",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key.to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Derives each VPS's SSH host key (an Ed25519 seed) from one secret.
pub(crate) struct HostKeys(ring::hmac::Key);

impl HostKeys {
    pub(crate) fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let secret = secret_file(
            &state_dir.join("vps-host-keys.key"),
            "every VPS gets a new SSH host key, and clients warn about the change",
        )?;
        Ok(Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret)))
    }

    /// The SSH gateway's host key.
    pub(crate) fn gateway_key(&self) -> river_ssh::HostKey {
        let seed = ring::hmac::sign(&self.0, b"river ssh gateway host key v1");
        let mut s = [0u8; 32];
        s.copy_from_slice(&seed.as_ref()[..32]);
        river_ssh::HostKey::from_seed(&s)
    }

    /// The seed of VPS `id`'s host key, hex.
    pub(crate) fn seed(&self, id: u64) -> Secret {
        let mut msg = b"river vps ssh host key v1\0".to_vec();
        msg.extend_from_slice(&id.to_be_bytes());
        Secret(hex::encode(ring::hmac::sign(&self.0, &msg).as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_differ_per_vps_and_stay_the_same() {
        let d = tempfile::tempdir().unwrap();
        let k = HostKeys::open(d.path()).unwrap();
        assert_ne!(k.seed(1), k.seed(2));
        assert_eq!(k.seed(1).0.len(), 64);
        let again = HostKeys::open(d.path()).unwrap();
        assert_eq!(k.seed(1), again.seed(1), "kept across restarts");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join("vps-host-keys.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
