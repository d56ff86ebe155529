//! How every service answers when it does not do what was asked: a [`HostError`], either a
//! refusal (the user's to act on: a kind and a sentence) or a failure of the host's own (its
//! store, its disk). Each transport turns it into its own form in one place: the mesh (and the
//! HTTPS API, which relays the mesh's answers and maps their kinds to status codes) in
//! [`HostError::into_response`], the SSH gateway in the line it writes.

use river_proto::msg::{ErrorKind, Response};

/// Why a request was not done.
#[derive(Debug)]
pub(crate) enum HostError {
    /// Refused: of what kind (not found, forbidden, invalid, conflict) and why, for the user.
    Refused { kind: ErrorKind, message: String },
    /// The host could not do it: not the user's doing.
    Failed(anyhow::Error),
}

/// What a service returns.
pub(crate) type HostResult<T> = Result<T, HostError>;

/// A refusal of `kind`, with a sentence for the user.
pub(crate) fn refused(kind: ErrorKind, message: impl Into<String>) -> HostError {
    HostError::Refused {
        kind,
        message: message.into(),
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { message, .. } => f.write_str(message),
            Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for HostError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

impl From<river_store::StoreError> for HostError {
    fn from(e: river_store::StoreError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<std::io::Error> for HostError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<river_mesh::FramedError> for HostError {
    fn from(e: river_mesh::FramedError) -> Self {
        Self::Failed(e.into())
    }
}

impl HostError {
    /// The kind and sentence the user is told.
    pub(crate) fn kind_and_message(self) -> (ErrorKind, String) {
        let e = match self {
            Self::Refused { kind, message } => return (kind, message),
            Self::Failed(e) => e,
        };
        // Overtaken by another change to the same task: the user may simply ask again.
        if is_stale(&e) {
            return (ErrorKind::Conflict, e.to_string());
        }
        let fault = e
            .chain()
            .find_map(|c| c.downcast_ref::<river_store::StoreError>()?.machine_fault());
        match fault {
            // A write that fails is rolled back whole: the request can be repeated once an
            // admin has fixed the machine.
            Some(what) => (
                ErrorKind::Internal,
                format!("{what}, so this could not be done ({e}); repeat it once an admin has fixed that"),
            ),
            None => (ErrorKind::Internal, format!("host error: {e}")),
        }
    }

    /// The answer on the mesh (and so the HTTPS API).
    pub(crate) fn into_response(self) -> Response {
        let (kind, message) = self.kind_and_message();
        Response::Error { kind, message }
    }
}

/// A change decided on a record that another change overtook before it was stored: nothing was
/// written. The caller reads the task again (or leaves it to whoever changed it).
#[derive(Debug, thiserror::Error)]
#[error("task {id} changed meanwhile; try again")]
pub(crate) struct Stale {
    pub id: u64,
}

/// Whether `e` is a [`Stale`] change.
pub(crate) fn is_stale(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Stale>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_is_told_once_with_its_kind() {
        let told = refused(ErrorKind::Forbidden, "task 3 belongs to user bob").kind_and_message();
        assert_eq!(told, (ErrorKind::Forbidden, "task 3 belongs to user bob".to_owned()));
        let stale = HostError::from(anyhow::Error::new(Stale { id: 7 })).kind_and_message();
        assert_eq!(
            stale,
            (ErrorKind::Conflict, "task 7 changed meanwhile; try again".to_owned())
        );
        let (kind, message) = HostError::from(anyhow::anyhow!("the node went away")).kind_and_message();
        assert_eq!(
            (kind, message.as_str()),
            (ErrorKind::Internal, "host error: the node went away")
        );
        assert!(matches!(
            refused(ErrorKind::NotFound, "no task 9").into_response(),
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ));
    }
}
