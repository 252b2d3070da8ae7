//! The plugin API's request and response shapes (reference calls-plugin.md §1.1):
//! bodies read up to upstream's limits, the three error shapes, the caller's id.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::app::AppError;

pub use calls_wire::http::USER_HEADER;
/// Upstream `requestBodyMaxSizeBytes`.
pub const MAX_BODY: usize = 1 << 20;
/// Upstream `logsUploadMaxSizeBytes`: twice the client's 1 MB log cap (JSON escaping).
pub const MAX_LOGS_BODY: usize = 2 << 20;

/// A request body read as far as `N` bytes, as upstream's `http.MaxBytesReader`: a
/// larger one is refused as soon as `N` is passed, the rest never read. Handlers
/// take it instead of `Bytes`, so the body is read only after the auth and rate-limit
/// layers let the request through, and never buffered anywhere before.
pub struct Limited<const N: usize>(pub Result<Bytes, BodyRead>);

#[derive(Debug)]
pub enum BodyRead {
    TooLarge,
    Broken(String),
}

impl<S: Send + Sync, const N: usize> axum::extract::FromRequest<S> for Limited<N> {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;
        let read = http_body_util::Limited::new(req.into_body(), N)
            .collect()
            .await;
        Ok(Limited(match read {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyRead::TooLarge),
            Err(e) => Err(BodyRead::Broken(e.to_string())),
        }))
    }
}

// ------------------------------------------------------------------ response shapes

/// Shape A: `{"message","detailed_error"?,"status_code"}` + newline, without a JSON
/// content type (upstream adds the header after writing the status).
pub fn shape_a(code: StatusCode, message: &str) -> Response {
    let body = format!(
        "{}\n",
        json!({"message": message, "status_code": code.as_u16()})
    );
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub fn success() -> Response {
    shape_a(StatusCode::OK, "success")
}

/// Shape B: Go's `http.Error`.
pub fn plain(code: StatusCode, text: &str) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

/// Shape C.
pub fn internal(code: StatusCode, public: &str, err: &dyn std::fmt::Display) -> Response {
    tracing::error!("public error message: {public}; internal details: {err}");
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": public}).to_string(),
    )
        .into_response()
}

pub const INTERNAL_MSG: &str = "An internal error has occurred. Check app server logs for details.";

pub fn json_ok<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{s}\n"),
        )
            .into_response(),
        Err(e) => internal(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MSG, &e),
    }
}

/// Call-operation errors as shape A: the known refusals are 400, the rest 500.
pub fn app_error(e: AppError) -> Response {
    match e {
        AppError::NoCallOngoing
        | AppError::NoPermissions
        | AppError::NotInCall
        | AppError::NotAllowed(_)
        | AppError::Forbidden
        | AppError::Refused(_) => shape_a(StatusCode::BAD_REQUEST, &e.to_string()),
        other => {
            tracing::error!(error = %other, "request failed");
            shape_a(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string())
        }
    }
}

pub fn user_id(h: &HeaderMap) -> String {
    h.get(USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Decodes a JSON body, upstream-style: too large or malformed → 400 shape A.
pub fn json_body<T: for<'de> Deserialize<'de>>(
    body: Limited<MAX_BODY>,
) -> Result<T, Box<Response>> {
    let bytes = match body.0 {
        Ok(b) => b,
        Err(BodyRead::TooLarge) => {
            return Err(Box::new(shape_a(
                StatusCode::BAD_REQUEST,
                "http: request body too large",
            )))
        }
        Err(BodyRead::Broken(e)) => return Err(Box::new(shape_a(StatusCode::BAD_REQUEST, &e))),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Box::new(shape_a(StatusCode::BAD_REQUEST, &e.to_string())))
}
