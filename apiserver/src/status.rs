//! API errors as upstream's `metav1.Status`: code, reason, message and details.

use api_types::resources::ResourceInfo;
use serde_json::{json, Value};

/// An error answered to a client as a `metav1.Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header (429, 504).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(info: &ResourceInfo, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": info.plural });
    if !info.group.is_empty() {
        d["group"] = json!(info.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", info.group_resource(), name),
        )
        .with_details(details(info, name))
    }

    /// 404 for a path that names no resource.
    pub fn path_not_found(path: &str) -> Self {
        tracing::debug!(%path, "no such resource path");
        Self::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({ "causes": [{ "reason": "UnexpectedServerResponse", "message": "404 page not found" }] }))
    }

    /// 405 for a verb the resource does not support (`action` names it in the log).
    pub fn method_not_supported(info: &ResourceInfo, action: &str) -> Self {
        tracing::debug!(resource = %info.group_resource(), %action, "verb not supported");
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({ "kind": info.plural, "group": info.group }))
    }

    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("the server was unable to respond with a content type that the client supports (accepted: {accept})"),
        )
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", info.group_resource(), name),
        )
        .with_details(details(info, name))
    }

    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::conflict_on(&info.group_resource(), info, name, why)
    }

    /// A 409 naming `what` (e.g. `pods/binding`) as the thing that could not be changed.
    pub fn conflict_on(what: &str, info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {what} \"{name}\": {why}"),
        )
        .with_details(details(info, name))
    }

    pub fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"),
        )
    }

    /// 403 for a request a rule refuses, as upstream's `NewForbidden`:
    /// `<resource> "<name>" is forbidden: <why>`.
    pub fn forbidden(info: &ResourceInfo, name: &str, why: impl std::fmt::Display) -> Self {
        let message = if name.is_empty() {
            format!("{} is forbidden: {why}", info.group_resource())
        } else {
            format!("{} \"{name}\" is forbidden: {why}", info.group_resource())
        };
        Self::new(403, "Forbidden", message).with_details(details(info, name))
    }

    /// 422 with one cause per field error, as upstream's `NewInvalid`.
    pub fn invalid(
        info: &ResourceInfo,
        name: &str,
        errors: &[api_types::validation::FieldError],
    ) -> Self {
        let mut causes: Vec<Value> = Vec::new();
        for e in errors {
            let cause =
                json!({ "reason": e.error_type.reason(), "message": e.message, "field": e.field });
            if !causes.contains(&cause) {
                causes.push(cause);
            }
        }
        let mut d = details(info, name);
        d["kind"] = json!(info.kind);
        d["causes"] = json!(causes);
        Self::new(
            422,
            "Invalid",
            api_types::validation::invalid_status_message(info.group, info.kind, name, errors),
        )
        .with_details(d)
    }

    /// 422 for a single problem not tied to a validated field.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.retry_after = Some(retry_after);
        e.details = Some(Box::new(json!({ "retryAfterSeconds": retry_after })));
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(504, "Timeout", message);
        e.retry_after = Some(1);
        e
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // StatusReasonUnknown is "" and omitted, as upstream's omitempty.
            if let Some(o) = s.as_object_mut() {
                o.remove("reason");
            }
        }
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s
    }
}

/// A `Status` of success, as delete-collection-less deletes and bindings answer.
pub fn success_status(details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Compacted { requested, compact_revision } => ApiError::gone(format!(
                "The resourceVersion for the provided list is too old. ({requested} < {compact_revision})"
            )),
            store::Error::FutureRevision { requested, current } => ApiError::timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            other => {
                tracing::warn!(error = %other, "storage error");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl ApiError {
    /// 422 for one field, for checks done outside api-types' validation (allocation).
    pub fn invalid_field(
        info: &ResourceInfo,
        name: &str,
        field: &str,
        bad_value: &Value,
        detail: &str,
    ) -> Self {
        let shown = match bad_value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let mut d = details(info, name);
        d["kind"] = json!(info.kind);
        d["causes"] = json!([{ "reason": "FieldValueInvalid", "message": format!("Invalid value: {shown}: {detail}"), "field": field }]);
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{}\" is invalid: {}: Invalid value: {}: {}",
                info.kind, name, field, shown, detail
            ),
        )
        .with_details(d)
    }
}
