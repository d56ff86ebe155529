//! What a message may carry that a log must never show.

use serde::{Deserialize, Serialize};

/// A secret carried in a message (a reservation token): serialized as the plain string, never
/// shown by `Debug`, so a logged request cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A task's environment variables, `(KEY, VALUE)` in order: on the wire and in the store exactly
/// the list of pairs, used as one (`Deref`), but `Debug` shows only the keys — users pass
/// passwords and tokens this way.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvVars(pub Vec<(String, String)>);

impl std::fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, _)| (k, "…"))).finish()
    }
}

impl std::ops::Deref for EnvVars {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for EnvVars {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<Vec<(String, String)>> for EnvVars {
    fn from(v: Vec<(String, String)>) -> Self {
        Self(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_show_in_debug_and_travel_unchanged() {
        let env = EnvVars(vec![("PASSWORD".into(), "hunter2".into()), ("N".into(), "1".into())]);
        let shown = format!("{env:?}");
        assert!(shown.contains("PASSWORD") && !shown.contains("hunter2"), "{shown}");
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(json, r#"[["PASSWORD","hunter2"],["N","1"]]"#);
        assert_eq!(serde_json::from_str::<EnvVars>(&json).unwrap(), env);
        let wire = postcard::to_allocvec(&env).unwrap();
        assert_eq!(wire, postcard::to_allocvec(&env.0).unwrap());
    }
}
