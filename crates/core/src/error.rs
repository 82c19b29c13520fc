//! The domain error. Every crate returns it; the proto crate maps it to a
//! `tonic::Status` in one place.

use std::fmt;

/// One problem with one field of an input, named by its path from the
/// resource root, e.g. `variants[1].params.rerank_weight_price`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it, in words a PM understands.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation, its path nested under `prefix`
    /// (`experiment` + `id` gives `experiment.id`).
    pub fn under(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = if self.field.is_empty() {
                prefix.to_owned()
            } else if self.field.starts_with('[') {
                format!("{prefix}{}", self.field)
            } else {
                format!("{prefix}.{}", self.field)
            };
        }
        self
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Everything that can go wrong in the experiment service, classified by
/// what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks one or more rules; every problem is listed.
    #[error("{}", describe_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// Kind of resource, e.g. "experiment".
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A resource with that id exists already.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// Kind of resource, e.g. "experiment".
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The change is not allowed in the resource's current state, e.g. an
    /// illegal status transition.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The change was based on a revision that is no longer current.
    #[error(
        "the change is based on revision {based_on}, but the current revision is {current}; \
         read it again and reapply the change"
    )]
    StaleRevision {
        /// The revision the caller based the change on.
        based_on: u64,
        /// The current revision.
        current: u64,
    },
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the needed role.
    #[error("{0}")]
    PermissionDenied(String),
    /// The store failed; nothing was changed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The answer is not ready yet (e.g. state still loading); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The request did not arrive in time (a body or headers that stall).
    #[error("{0}")]
    RequestTimeout(String),
    /// The request is larger than the method takes.
    #[error("{0}")]
    TooLarge(String),
    /// The service is at capacity and refused the call without doing
    /// anything; the caller should retry after `retry_after`.
    #[error("{message}")]
    Overloaded {
        /// What is at capacity.
        message: String,
        /// How long to wait before retrying.
        retry_after: std::time::Duration,
    },
}

impl Error {
    /// An `InvalidArgument` with a single violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// An `InvalidArgument` when `violations` is not empty.
    pub fn check(violations: Vec<FieldViolation>) -> Result<(), Self> {
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Self::InvalidArgument(violations))
        }
    }
}

fn describe_violations(violations: &[FieldViolation]) -> String {
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    listed.join("; ")
}
