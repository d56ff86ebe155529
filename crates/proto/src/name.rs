//! Names of nodes and users: parsed once at the edge, so the rest of the code holds valid ones.

use std::fmt;

/// A node or user name: 1–63 characters of lower-case letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit. Safe in certificates, file names and shell output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name {0:?}: use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit")]
pub struct InvalidName(pub String);

impl Name {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidName(s.to_owned()))
        }
    }

    /// Turns a machine's hostname into a node name (lower case, domain kept).
    pub fn from_hostname(host: &str) -> Result<Self, InvalidName> {
        Self::parse(&host.trim().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostnames_and_refuses_the_rest() {
        assert!(Name::parse("gpu-01").is_ok());
        assert!(Name::parse("node1.lab.example").is_ok());
        assert_eq!(Name::from_hostname("GPU-01\n").unwrap().as_str(), "gpu-01");
        for bad in ["", "-x", "a b", "a/b", "A", &"x".repeat(64), "../etc", "é"] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
