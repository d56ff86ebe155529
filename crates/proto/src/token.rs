//! Join and invite tokens.
//!
//! A token reads `rvt1.<id>.<secret>.<ca>`: an id the host looks the token up by, a 24-byte random
//! secret, and the SHA-256 fingerprint of the cluster CA certificate (both base64url). The
//! fingerprint lets a new runner or user verify the host on first contact with no prior trust, as
//! kubeadm's CA hash does. The host stores only a SHA-256 hash of the secret.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const PREFIX: &str = "rvt1";
const SECRET_LEN: usize = 24;

/// A parsed token. Its `Debug` form hides the secret, so logging one leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    secret: [u8; SECRET_LEN],
    pub ca_fingerprint: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenParseError {
    #[error(
        "not a river join token (it should start with `{PREFIX}.`); copy the whole line `river token create` printed"
    )]
    NotAToken,
    #[error("join token is damaged ({0}); copy the whole line `river token create` printed")]
    Damaged(&'static str),
}

impl JoinToken {
    /// A fresh token for the CA with this fingerprint.
    pub fn generate(rng: &mut impl RngCore, ca_fingerprint: [u8; 32]) -> Self {
        let mut id = [0u8; 5];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret,
            ca_fingerprint,
        }
    }

    pub fn parse(text: &str) -> Result<Self, TokenParseError> {
        let text = text.trim();
        let mut parts = text.split('.');
        if parts.next() != Some(PREFIX) {
            return Err(TokenParseError::NotAToken);
        }
        let (Some(id), Some(secret), Some(ca), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenParseError::Damaged("wrong number of parts"));
        };
        if id.len() != 10 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(TokenParseError::Damaged("bad id"));
        }
        let secret: [u8; SECRET_LEN] = B64
            .decode(secret)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(TokenParseError::Damaged("bad secret"))?;
        let ca_fingerprint: [u8; 32] = B64
            .decode(ca)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(TokenParseError::Damaged("bad CA fingerprint"))?;
        Ok(Self {
            id: id.to_owned(),
            secret,
            ca_fingerprint,
        })
    }

    /// What the host stores: a hash, never the secret.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret))
    }

    /// Compares a stored hash with this token's in constant time.
    pub fn matches_hash(&self, stored: &str) -> bool {
        let ours = self.secret_hash();
        ours.len() == stored.len() && ours.bytes().zip(stored.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            self.id,
            B64.encode(self.secret),
            B64.encode(self.ca_fingerprint)
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A stored token's state, as the host's policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub expires_at: i64,
    pub uses_left: u32,
    pub revoked: bool,
}

/// Why a token was refused. Each message says what to do next.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRefusal {
    #[error("join token is not known to this host (wrong cluster, or the host's state was reset); ask an admin for a new one with `river token create`")]
    Unknown,
    #[error("join token expired {ago_secs}s ago; create a new one with `river token create`")]
    Expired { ago_secs: i64 },
    #[error("join token has no uses left; create a new one with `river token create`")]
    UsedUp,
    #[error("join token was revoked; create a new one with `river token create`")]
    Revoked,
}

impl TokenState {
    pub fn check(&self, now_secs: i64) -> Result<(), TokenRefusal> {
        if self.revoked {
            return Err(TokenRefusal::Revoked);
        }
        if now_secs >= self.expires_at {
            return Err(TokenRefusal::Expired {
                ago_secs: now_secs - self.expires_at,
            });
        }
        if self.uses_left == 0 {
            return Err(TokenRefusal::UsedUp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken::generate(&mut rand::rng(), [7u8; 32])
    }

    #[test]
    fn round_trips_through_text() {
        let t = token();
        let text = t.to_string();
        assert!(text.starts_with("rvt1."));
        assert_eq!(JoinToken::parse(&format!("  {text}\n")).unwrap(), t);
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = token();
        let secret_b64 = t.to_string().split('.').nth(2).unwrap().to_owned();
        assert!(!format!("{t:?}").contains(&secret_b64));
    }

    #[test]
    fn damaged_tokens_are_refused_with_a_reason() {
        let t = token().to_string();
        assert_eq!(JoinToken::parse("hello"), Err(TokenParseError::NotAToken));
        assert!(matches!(
            JoinToken::parse(&t[..t.len() - 3]),
            Err(TokenParseError::Damaged(_))
        ));
        assert!(matches!(
            JoinToken::parse(&format!("{t}.x")),
            Err(TokenParseError::Damaged(_))
        ));
        let upper = t.replacen(&t[5..15], &t[5..15].to_ascii_uppercase(), 1);
        if upper != t {
            assert!(JoinToken::parse(&upper).is_err());
        }
    }

    #[test]
    fn hash_matches_only_its_own_secret() {
        let a = token();
        let b = token();
        assert!(a.matches_hash(&a.secret_hash()));
        assert!(!a.matches_hash(&b.secret_hash()));
        assert!(!a.matches_hash(""));
    }

    #[test]
    fn policy_refuses_expired_used_and_revoked() {
        let ok = TokenState {
            expires_at: 100,
            uses_left: 1,
            revoked: false,
        };
        assert_eq!(ok.check(99), Ok(()));
        assert_eq!(ok.check(100), Err(TokenRefusal::Expired { ago_secs: 0 }));
        assert_eq!(
            TokenState {
                uses_left: 0,
                ..ok.clone()
            }
            .check(50),
            Err(TokenRefusal::UsedUp)
        );
        assert_eq!(TokenState { revoked: true, ..ok }.check(50), Err(TokenRefusal::Revoked));
    }
}
