//! Keys: a server's host key (made from a 32-byte seed, so that it survives restarts without a
//! key file) and the public keys users log in with.

use russh::keys::ssh_key;

/// A server's Ed25519 host key.
#[derive(Clone)]
pub struct HostKey(pub(crate) russh::keys::PrivateKey);

impl HostKey {
    /// The host key whose Ed25519 seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(russh::keys::PrivateKey::from(
            ssh_key::private::Ed25519Keypair::from_seed(seed),
        ))
    }

    /// The host key from its seed written as hex (64 digits); `None` if it is not that.
    pub fn from_hex_seed(seed: &str) -> Option<Self> {
        let seed: [u8; 32] = hex::decode(seed).ok()?.try_into().ok()?;
        Some(Self::from_seed(&seed))
    }

    /// Its public half, as an OpenSSH line (`ssh-ed25519 AAAA…`), for `known_hosts`.
    pub fn public_line(&self) -> String {
        self.0.public_key().to_openssh().unwrap_or_default()
    }
}

/// A public key a user logs in with, or registers.
#[derive(Clone, Debug)]
pub struct PublicKey(pub(crate) russh::keys::PublicKey);

/// Why a signature does not prove that its signer holds a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("not an SSH signature")]
    NotASignature,
    #[error("the signature is not by this key, of this message")]
    Wrong,
}

impl PublicKey {
    /// Reads an OpenSSH public key line (`TYPE BASE64 [COMMENT]`).
    pub fn parse(line: &str) -> Result<Self, String> {
        russh::keys::PublicKey::from_openssh(line.trim())
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Whether the two are the same key (comments aside).
    pub fn same_key(&self, other: &PublicKey) -> bool {
        self.0.key_data() == other.0.key_data()
    }

    /// As an OpenSSH line, `TYPE BASE64` and the comment if it has one.
    pub fn line(&self) -> String {
        self.0.to_openssh().unwrap_or_default()
    }

    /// Checks that `pem` (an `ssh-keygen -Y sign` signature) is this key's signature of `message`
    /// in `namespace`.
    pub fn verify(&self, namespace: &str, message: &[u8], pem: &str) -> Result<(), SignatureError> {
        let sig = ssh_key::SshSig::from_pem(pem.trim()).map_err(|_| SignatureError::NotASignature)?;
        self.0
            .verify(namespace, message, &sig)
            .map_err(|_| SignatureError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_come_from_their_seed() {
        let a = HostKey::from_hex_seed(&"11".repeat(32)).unwrap();
        assert_eq!(a.public_line(), HostKey::from_seed(&[0x11; 32]).public_line());
        assert!(a.public_line().starts_with("ssh-ed25519 "));
        assert_ne!(a.public_line(), HostKey::from_seed(&[0x22; 32]).public_line());
        assert!(HostKey::from_hex_seed("zz").is_none());
        assert!(HostKey::from_hex_seed(&"11".repeat(31)).is_none());
    }

    #[test]
    fn keys_compare_without_their_comments() {
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPApQ0j57M7iGP/Usn4Gpx9FDHOqJCvgdjD3+Zj7Rpga";
        let a = PublicKey::parse(&format!("{k} alice@laptop")).unwrap();
        let b = PublicKey::parse(k).unwrap();
        assert!(a.same_key(&b));
        let other = HostKey::from_seed(&[7; 32]).public_line();
        assert!(!a.same_key(&PublicKey::parse(&other).unwrap()));
        assert!(PublicKey::parse("ssh-ed25519 notbase64").is_err());
        assert_eq!(b.line(), k);
    }
}
