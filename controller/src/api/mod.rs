//! The HTTP layer: parses requests into commands and renders replies and
//! errors (Neutron style `{"NeutronError": {type, message, detail}}` for the
//! network API and internal endpoints, Keystone style under `/v3`). It never
//! touches state itself: identity and network logic live in `identity` and
//! `network`, durable changes go through `state::Core::mutate`. Every
//! response carries `X-Openstack-Request-Id`.

pub mod keystone;
pub mod neutron;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use axum::{
    extract::{rejection::JsonRejection, DefaultBodyLimit, Path, Request, State},
    http::{HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    hosts::{Command, CommandError, Reply},
    report::HostReport,
};

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(keystone::routes())
        .merge(neutron::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/internal/v1/hosts", get(list_hosts))
        .route("/internal/v1/hosts/{host}", get(show_host).put(report_host))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(body_limit))
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// Renders an [`ApiError`] the Neutron way.
pub fn neutron_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({"NeutronError": {"type": e.kind, "message": e.message, "detail": ""}}))).into_response()
}

/// Renders an [`ApiError`] the Keystone way.
pub fn keystone_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({"error": {"code": e.status, "title": e.title(), "message": e.message}}))).into_response()
}

/// The caller behind `X-Auth-Token`, or 401.
pub fn authenticate(app: &App, headers: &axum::http::HeaderMap) -> Result<Auth, ApiError> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("The request you have made requires authentication."))?;
    crate::identity::authenticate(&app.core.read(), token, crate::model::now_unix())
}

/// A JSON body, or a 400/413 [`ApiError`] saying what is wrong with it.
pub fn json_body(body: Result<Json<serde_json::Value>, JsonRejection>) -> Result<serde_json::Value, ApiError> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(413, "RequestEntityTooLarge", format!("request body exceeds {MAX_BODY} bytes")))
        }
        Err(r) => Err(ApiError::bad_request(format!("invalid request body: {}", r.body_text()))),
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// Refuses a declared body over [`MAX_BODY`] before reading any of it (a
/// body without Content-Length is cut off by `DefaultBodyLimit` instead).
async fn body_limit(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body exceeds {MAX_BODY} bytes"),
        );
    }
    next.run(req).await
}

async fn request_id(req: Request, next: Next) -> Response {
    let id = format!(
        "req-{:016x}-{:08x}",
        crate::report::now_ms(),
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let mut resp = {
        let _e = span.enter();
        tracing::debug!("received");
        drop(_e);
        next.run(req).await
    };
    let status = resp.status().as_u16();
    span.in_scope(|| tracing::debug!(status, "answered"));
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, "request failed"));
    }
    resp.headers_mut().insert(
        "x-openstack-request-id",
        HeaderValue::from_str(&id).expect("ascii id"),
    );
    resp
}

/// A Neutron-style fault body.
pub fn fault(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"NeutronError": {"type": kind, "message": message, "detail": ""}})),
    )
        .into_response()
}

fn command_error(e: CommandError) -> Response {
    match e {
        CommandError::BadRequest(m) => fault(StatusCode::BAD_REQUEST, "BadRequest", m),
        CommandError::NotFound { kind, .. } => fault(
            StatusCode::NOT_FOUND,
            &format!("{kind}NotFound"),
            e.to_string(),
        ),
    }
}

fn json_rejection(r: JsonRejection) -> Response {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => fault(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("request body exceeds {MAX_BODY} bytes"),
        ),
        _ => fault(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("invalid request body: {}", r.body_text()),
        ),
    }
}

fn reply(r: Result<Reply, CommandError>) -> Response {
    match r {
        Ok(Reply::Accepted) => StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::Hosts(h)) => Json(json!({ "hosts": h })).into_response(),
        Ok(Reply::Host(h)) => Json(json!({ "host": h })).into_response(),
        Err(e) => command_error(e),
    }
}

async fn not_found() -> Response {
    fault(
        StatusCode::NOT_FOUND,
        "HTTPNotFound",
        "the resource could not be found",
    )
}

async fn list_hosts(State(app): State<Arc<App>>) -> Response {
    reply(app.hosts.apply(Command::ListHosts))
}

async fn show_host(State(app): State<Arc<App>>, Path(host): Path<String>) -> Response {
    reply(app.hosts.apply(Command::ShowHost { host }))
}

async fn report_host(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    body: Result<Json<HostReport>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(report)) => reply(app.hosts.apply(Command::ReportHost { host, report })),
        Err(r) => json_rejection(r),
    }
}
