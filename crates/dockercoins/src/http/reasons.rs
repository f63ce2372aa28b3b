//! One-line reasons for the answers the router gives by itself: a 404 for a
//! path no route matches (a service's fallback), and a 405 for a method its
//! route does not take.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A 404 with a one-line reason, for services to use as their fallback.
pub async fn not_found(request: Request) -> Response {
    let line = format!("not found: {} {}\n", request.method(), request.uri().path());
    (StatusCode::NOT_FOUND, line).into_response()
}

/// A 405 with a one-line reason: every route's answer to a method it lacks.
pub async fn method_not_allowed(request: Request) -> Response {
    let line = format!(
        "method not allowed: {} {}\n",
        request.method(),
        request.uri().path()
    );
    (StatusCode::METHOD_NOT_ALLOWED, line).into_response()
}
