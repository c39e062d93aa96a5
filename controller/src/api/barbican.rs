//! The Key Manager API (a Barbican v1 subset) below the catalog's
//! `key-manager` endpoint, `<public url>/key-manager`: version discovery,
//! `/v1/secrets` (create, two-step payload PUT, list, metadata, payload,
//! delete) and `/v1/containers` (create, list, get, delete). Errors are
//! Barbican's `{"code", "title", "description"}`. Handlers authenticate,
//! extract, call `keymanager::*` (through `Core::mutate` for changes) and
//! render; they never validate attributes themselves.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use super::authenticate;
use crate::{app::App, error::ApiError, keymanager};

/// The catalog's `key-manager` endpoint, below the public URL.
pub const ENDPOINT_PATH: &str = "/key-manager";

type Pairs = Vec<(String, String)>;

fn base(app: &App) -> String {
    format!("{}{ENDPOINT_PATH}", app.config.public_url)
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        _ => "Internal Server Error",
    }
}

/// Renders an [`ApiError`] the Barbican way.
pub fn barbican_error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"code": e.status, "title": title(e.status), "description": e.message})),
    )
        .into_response()
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(barbican_error)
}

/// A JSON request body as Barbican reads it: `Content-Type:
/// application/json` (415 otherwise), then 400 `Malformed JSON`.
fn json_request(h: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if ct != "application/json" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "Unexpected content type. Expected content types are: ['application/json']",
        ));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::bad_request("Malformed JSON"))
}

fn version_info(app: &App) -> Value {
    json!({
        "id": "v1",
        "status": "stable",
        "updated": "2015-04-28T00:00:00Z",
        "links": [
            {"rel": "self", "href": format!("{}/v1/", base(app))},
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.key-manager-v1+json"}],
    })
}

/// GET /key-manager: the versions (300, as Barbican), microversion 1.0.
async fn versions(State(app): State<Arc<App>>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [version_info(&app)]}})),
    )
        .into_response()
}

async fn v1(State(app): State<Arc<App>>) -> Response {
    Json(json!({"version": version_info(&app)})).into_response()
}

fn created(location: String, key: &str) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location.clone())],
        Json(json!({ key: location })),
    )
        .into_response()
}

// ------------------------------------------------------------------ secrets

async fn secret_create(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_request(&h, &body)?;
        let s = app
            .core
            .mutate(|s| keymanager::create_secret(s, &auth, &body))?;
        Ok(created(
            format!("{}/v1/secrets/{}", base(&app), s.id),
            "secret_ref",
        ))
    })())
}

async fn secret_list(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<Pairs>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let b = base(&app);
        let items = keymanager::list_secrets(&s, &auth, &q)
            .into_iter()
            .map(|x| keymanager::render_secret(&b, x))
            .collect();
        Ok(Json(keymanager::page(&b, "secrets", items, &q, true)).into_response())
    })())
}

fn accept(h: &HeaderMap) -> Option<&str> {
    h.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

fn payload_response(app: &App, h: &HeaderMap, id: &str) -> Result<Response, ApiError> {
    let auth = authenticate(app, h)?;
    let (ct, bytes) = keymanager::payload(&app.core.read(), &auth, id, accept(h))?;
    Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response())
}

/// GET /v1/secrets/{id}: the metadata for a JSON Accept (or none), the
/// payload otherwise (Barbican's deprecated form).
async fn secret_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond((|| {
        let json_accept = matches!(
            accept(&h).map(str::trim),
            None | Some("application/json" | "*/*" | "")
        );
        if !json_accept {
            return payload_response(&app, &h, &id);
        }
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let x = keymanager::secret(&s, &auth, &id)?;
        Ok(Json(keymanager::render_secret(&base(&app), x)).into_response())
    })())
}

async fn secret_payload(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond(payload_response(&app, &h, &id))
}

async fn secret_put(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let ct = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let enc = h
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        app.core
            .mutate(|s| keymanager::put_payload(s, &auth, &id, ct, enc, &body))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

async fn secret_delete(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        app.core
            .mutate(|s| keymanager::delete_secret(s, &auth, &id))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

// --------------------------------------------------------------- containers

async fn container_create(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let body = json_request(&h, &body)?;
        let b = base(&app);
        let c = app
            .core
            .mutate(|s| keymanager::create_container(s, &auth, &b, &body))?;
        Ok(created(
            format!("{b}/v1/containers/{}", c.id),
            "container_ref",
        ))
    })())
}

async fn container_list(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<Pairs>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let b = base(&app);
        let items = keymanager::list_containers(&s, &auth, &q)
            .into_iter()
            .map(|x| keymanager::render_container(&b, x))
            .collect();
        Ok(Json(keymanager::page(&b, "containers", items, &q, false)).into_response())
    })())
}

async fn container_show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        let s = app.core.read();
        let c = keymanager::container(&s, &auth, &id)?;
        Ok(Json(keymanager::render_container(&base(&app), c)).into_response())
    })())
}

async fn container_delete(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    respond((|| {
        let auth = authenticate(&app, &h)?;
        app.core
            .mutate(|s| keymanager::delete_container(s, &auth, &id))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

/// The Key Manager's routes (with and without trailing slashes, as
/// barbicanclient posts to `secrets/`).
pub fn routes() -> Router<Arc<App>> {
    let p = ENDPOINT_PATH;
    let mut r = Router::new()
        .route(p, get(versions))
        .route(&format!("{p}/"), get(versions))
        .route(&format!("{p}/v1"), get(v1))
        .route(&format!("{p}/v1/"), get(v1));
    for slash in ["", "/"] {
        r = r
            .route(
                &format!("{p}/v1/secrets{slash}"),
                get(secret_list).post(secret_create),
            )
            .route(
                &format!("{p}/v1/secrets/{{id}}{slash}"),
                get(secret_show).put(secret_put).delete(secret_delete),
            )
            .route(
                &format!("{p}/v1/secrets/{{id}}/payload{slash}"),
                get(secret_payload),
            )
            .route(
                &format!("{p}/v1/containers{slash}"),
                get(container_list).post(container_create),
            )
            .route(
                &format!("{p}/v1/containers/{{id}}{slash}"),
                get(container_show).delete(container_delete),
            );
    }
    r
}
