//! Label and field selectors: upstream's string grammars (`?labelSelector=` and
//! `?fieldSelector=`), `metav1.LabelSelector` conversion, each kind's selectable fields, and
//! node selectors (node affinity matching).

pub mod field;
pub mod label;
pub mod node;

pub use field::{
    field_set, supported_fields, FieldOperator, FieldRequirement, FieldSelector, Fields,
};
pub use label::{LabelSelector, Operator, Requirement};

use thiserror::Error;

/// Why a selector was rejected. The messages are upstream's, so the apiserver can put them
/// straight into a 400 BadRequest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// A label selector string or `metav1.LabelSelector` that does not parse or validate.
    #[error("{0}")]
    InvalidLabelSelector(String),
    /// A field selector string that does not parse.
    #[error("{0}")]
    InvalidFieldSelector(String),
    /// A field the kind cannot be selected on.
    #[error("{message}")]
    UnsupportedField { field: String, message: String },
    /// `field_set` was given something other than a JSON object.
    #[error("object is not a JSON object")]
    NotAnObject,
}

/// `Result` with [`SelectorError`].
pub type Result<T, E = SelectorError> = std::result::Result<T, E>;
