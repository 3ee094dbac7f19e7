//! Errors of the store, and how etcd's errors map onto them.

use std::time::Duration;

use crate::KeyValue;

/// An error from a [`Store`](crate::Store) operation.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The relative key.
        key: String,
    },

    /// A create found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The relative key.
        key: String,
    },

    /// A compare-and-swap failed: the key's `mod_revision` was not the expected one.
    #[error("key {key:?} was modified concurrently")]
    Conflict {
        /// The relative key.
        key: String,
        /// The key's current value (`None` if it vanished in between).
        current: Option<KeyValue>,
    },

    /// The requested revision has been compacted away.
    #[error("revision {requested} has been compacted (compacted up to {compact_revision})")]
    Compacted {
        /// The revision asked for: the list revision, the watch's `after_revision`, or the
        /// compaction target.
        requested: i64,
        /// The revision etcd has compacted up to; 0 when it could not be determined.
        compact_revision: i64,
    },

    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision; 0 when it could not be determined.
        current: i64,
    },

    /// etcd refused a write because the request exceeds its size limit
    /// (`--max-request-bytes`).
    #[error("request for key {key:?} is too large")]
    TooLarge {
        /// The relative key.
        key: String,
    },

    /// etcd could not be reached or could not serve the request right now (connection
    /// refused or broken, no leader, server-side timeout). Retrying may succeed.
    #[error("etcd is unavailable: {}", innermost_cause(.0))]
    Unavailable(#[source] etcd_client::Error),

    /// A request did not complete within the configured request timeout.
    #[error("etcd {operation} request timed out after {timeout:?}")]
    Timeout {
        /// The store operation, as in the `operation` metric label.
        operation: &'static str,
        /// The configured request timeout.
        timeout: Duration,
    },

    /// etcd rejected the request for another reason.
    #[error("etcd request failed")]
    Etcd(#[source] etcd_client::Error),

    /// etcd canceled a watch for a reason other than compaction.
    #[error("etcd canceled the watch: {reason}")]
    WatchCanceled {
        /// etcd's cancel reason.
        reason: String,
    },

    /// etcd closed a watch stream without canceling it (e.g. the server shut down).
    #[error("etcd closed the watch stream")]
    WatchClosed,

    /// etcd returned a key that is not valid UTF-8 or lies outside the prefix.
    #[error("etcd returned an invalid key {key:?}")]
    InvalidKey {
        /// The raw key, lossily decoded.
        key: String,
    },

    /// etcd's response lacks something it always carries (e.g. a header).
    #[error("malformed response from etcd: {0}")]
    MalformedResponse(&'static str),

    /// The store's configuration is invalid.
    #[error("invalid etcd configuration: {0}")]
    InvalidConfig(String),

    /// The TLS files for etcd cannot be used.
    #[error("invalid etcd TLS configuration: {0}")]
    Tls(#[from] crate::tls::TlsError),

    /// The store's metrics could not be registered.
    #[error("cannot register etcd metrics")]
    Metrics(#[source] prometheus::Error),
}

/// The result of a store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an etcd error means for the store, before the caller adds context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Compacted,
    FutureRevision,
    TooLarge,
    Unavailable,
    Other,
}

// etcd's gRPC error messages (etcd `api/v3rpc/rpctypes`); the status codes alone are
// ambiguous (compacted and future revision are both OutOfRange).
const MSG_COMPACTED: &str = "required revision has been compacted";
const MSG_FUTURE_REV: &str = "required revision is a future revision";
const MSG_TOO_LARGE: &str = "request is too large";
const MSG_UNAVAILABLE: [&str; 6] = [
    "etcdserver: request timed out",
    "etcdserver: leader changed",
    "etcdserver: no leader",
    "etcdserver: too many requests",
    "etcdserver: server stopped",
    "etcdserver: not capable",
];

/// Classifies an etcd client error.
pub(crate) fn classify(err: &etcd_client::Error) -> Kind {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains(MSG_COMPACTED) {
                Kind::Compacted
            } else if message.contains(MSG_FUTURE_REV) {
                Kind::FutureRevision
            } else if message.contains(MSG_TOO_LARGE) {
                Kind::TooLarge
            } else if MSG_UNAVAILABLE.iter().any(|m| message.contains(m)) {
                Kind::Unavailable
            } else {
                match status.code() {
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::Unknown => Kind::Unavailable,
                    _ => Kind::Other,
                }
            }
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => Kind::Unavailable,
        _ => Kind::Other,
    }
}

/// The innermost cause of an etcd client error: what an operator needs to see (connection
/// refused, a closed connection, an unknown certificate issuer), which the outer errors
/// only wrap. A status from etcd itself has no cause; its message is the reason.
fn innermost_cause(err: &etcd_client::Error) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    match err {
        etcd_client::Error::GRpcStatus(status)
            if std::ptr::addr_eq(cause as *const dyn std::error::Error, err as *const _) =>
        {
            status.message().to_owned()
        }
        _ => cause.to_string(),
    }
}

/// Maps an etcd error that needs no further context: connectivity problems become
/// [`Error::Unavailable`], everything else [`Error::Etcd`]. Callers that can see
/// compaction, future-revision or size errors check [`classify`] first.
pub(crate) fn from_etcd(err: etcd_client::Error) -> Error {
    match classify(&err) {
        Kind::Unavailable => Error::Unavailable(err),
        _ => Error::Etcd(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn classifies_etcd_messages() {
        use tonic::Code;
        let cases = [
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                Kind::Compacted,
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                Kind::FutureRevision,
            ),
            (
                status(Code::InvalidArgument, "etcdserver: request is too large"),
                Kind::TooLarge,
            ),
            (
                status(Code::Unavailable, "etcdserver: request timed out"),
                Kind::Unavailable,
            ),
            (
                status(Code::Unavailable, "connection refused"),
                Kind::Unavailable,
            ),
            (
                status(
                    Code::ResourceExhausted,
                    "etcdserver: mvcc: database space exceeded",
                ),
                Kind::Other,
            ),
            (
                etcd_client::Error::WatchError("channel closed".into()),
                Kind::Unavailable,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(classify(&err), kind, "{err}");
        }
    }

    #[test]
    fn unavailable_names_the_cause() {
        let err = from_etcd(status(tonic::Code::Unavailable, "connection refused"));
        assert_eq!(err.to_string(), "etcd is unavailable: connection refused");
    }

    #[test]
    fn maps_to_store_errors() {
        assert!(matches!(
            from_etcd(status(tonic::Code::Unavailable, "connection refused")),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            from_etcd(status(
                tonic::Code::PermissionDenied,
                "etcdserver: permission denied"
            )),
            Error::Etcd(_)
        ));
    }
}
