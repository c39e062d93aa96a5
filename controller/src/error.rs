//! The one error type commands return. The HTTP layer renders it in the
//! style of the API that was called: Neutron (`{"NeutronError": {type,
//! message, detail}}`) or Keystone (`{"error": {code, title, message}}`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Neutron fault type (`InvalidInput`, `NetworkNotFound`, ...); Keystone
    /// renders the status title instead.
    pub kind: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, kind: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }
    /// 400 with Neutron's `InvalidInput` type.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "InvalidInput", message)
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "Unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }
    /// 404 `<Kind>NotFound`, with Neutron's message form.
    pub fn not_found(kind: &str, id: &str) -> ApiError {
        let title = kind[..1].to_uppercase() + &kind[1..];
        ApiError::new(
            404,
            format!("{title}NotFound"),
            format!("{title} {id} could not be found."),
        )
    }
    pub fn conflict(kind: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(409, kind, message)
    }
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(412, "PreconditionFailed", message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalServerError", message)
    }

    /// The status line's reason phrase (Keystone's `title`).
    pub fn title(&self) -> &'static str {
        match self.status {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            412 => "Precondition Failed",
            413 => "Request Entity Too Large",
            _ => "Internal Server Error",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}
