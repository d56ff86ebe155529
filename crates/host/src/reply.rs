//! The answer a request gets when it is refused.

use river_proto::msg::{ErrorKind, Response};

/// A refusal of `kind`, with a sentence for the user.
pub(crate) fn err(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}
