//! The JSON API of `serve`, under `/api/v1`, bearer-token protected:
//!
//! | request | answer |
//! |---|---|
//! | `GET /streams` | `200` every stream |
//! | `POST /streams` (a stream's config) | `201` the stream; `409` duplicate id or token |
//! | `GET /streams/{id}` | `200` the stream |
//! | `PUT /streams/{id}` (a stream's config) | `200` replaced (restarted with the new config; the token stays unless given) |
//! | `DELETE /streams/{id}` | `200`; its viewers are gone when it returns |
//! | `PUT /streams/{id}/command` `{"command": "start"\|"stop"\|"restart"}` | `200`; `409` start of a running stream |
//! | `GET /streams/{id}/report` | `200` state, uptime, restarts, FFmpeg progress, viewers by kind, log tail, events |
//!
//! Errors are `{"error": "...", "field": "..."}`: `401` missing or wrong
//! token (checked before anything else), `404` unknown id, `400` malformed
//! JSON or an invalid field (named), `409` conflicts.

// Helpers return the error `Response` itself for the handler to send: its
// size does not matter on this path.
#![allow(clippy::result_large_err)]

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::config::stream::{FieldError, StreamConfig};
use crate::restream::{StreamError, Streams};
use crate::token;

/// Stream configs are small; anything larger is refused.
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct Api {
    pub streams: Streams,
    pub token: String,
}

pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/api/v1/streams", get(list).post(create))
        .route(
            "/api/v1/streams/{id}",
            get(show).put(replace).delete(remove),
        )
        .route("/api/v1/streams/{id}/command", put(command))
        .route("/api/v1/streams/{id}/report", get(report))
        .route("/api/v1/streams/{id}/recordings", get(recordings))
        .route("/api/v1/{*rest}", axum::routing::any(unknown))
        .route("/metrics", get(metrics))
        .with_state(api)
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let mut body = json!({ "error": message });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn ok(status: StatusCode, value: impl serde::Serialize) -> Response {
    let mut resp = (status, Json(value)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Proof the request carries the API token: the first extractor of every
/// handler, so a request without it is `401` whatever else is wrong with it.
struct Authed;

impl axum::extract::FromRequestParts<Api> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Api,
    ) -> Result<Self, Response> {
        authorize(api, &parts.headers).map(|()| Authed)
    }
}

/// `Authorization: Bearer <api_token>`, compared in constant time.
fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(t) if token::matches(&api.token, t) => Ok(()),
        found => {
            let msg = if found.is_some() {
                "wrong API token"
            } else {
                "missing API token: send Authorization: Bearer <api_token> (api_token in the config or PIXELPASS_API_TOKEN)"
            };
            let mut resp = error(StatusCode::UNAUTHORIZED, msg, None);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pixelpass\""),
            );
            Err(resp)
        }
    }
}

fn stream_error(e: StreamError) -> Response {
    match e {
        StreamError::NotFound(_) => error(StatusCode::NOT_FOUND, &e.to_string(), None),
        StreamError::Conflict(m) => error(StatusCode::CONFLICT, &m, None),
        StreamError::Invalid(f) => invalid(f),
        StreamError::Internal(m) => error(StatusCode::INTERNAL_SERVER_ERROR, &m, None),
    }
}

fn invalid(f: FieldError) -> Response {
    error(StatusCode::BAD_REQUEST, &f.to_string(), Some(&f.field))
}

async fn read_json(body: Body) -> Result<Value, Response> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {} KiB", MAX_BODY / 1024),
            None,
        )
    })?;
    parse_json(&bytes)
}

/// A request body as JSON, or the `400` saying why not.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("malformed JSON: {e}"),
            None,
        )
    })
}

/// Deserialize with the path of the offending field in the error.
pub(crate) fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Response> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // "missing field `x`" / "unknown field `x`" name the field themselves.
        let field = if path == "." {
            inner
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_default()
        } else {
            path
        };
        let field = (!field.is_empty()).then_some(field);
        let msg = match &field {
            Some(f) => format!("`{f}`: {inner}"),
            None => inner,
        };
        error(StatusCode::BAD_REQUEST, &msg, field.as_deref())
    })
}

async fn list(_: Authed, State(api): State<Api>) -> Response {
    ok(StatusCode::OK, api.streams.list())
}

async fn create(_: Authed, State(api): State<Api>, body: Body) -> Response {
    let value = match read_json(body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let config: StreamConfig = match decode(value) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match api.streams.create(config) {
        Ok(view) => {
            let mut resp = ok(StatusCode::CREATED, &view);
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/streams/{}", view.id)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => stream_error(e),
    }
}

async fn show(_: Authed, State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.streams.get(&id) {
        Some(view) => ok(StatusCode::OK, view),
        None => stream_error(StreamError::NotFound(id)),
    }
}

async fn replace(
    _: Authed,
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    if api.streams.get(&id).is_none() {
        return stream_error(StreamError::NotFound(id));
    }
    let mut value = match read_json(body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // The id comes from the path; a body that names another is a mistake.
    if let Some(obj) = value.as_object_mut() {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), json!(id));
            }
            Some(Value::String(s)) if *s == id => {}
            Some(_) => {
                return invalid(FieldError {
                    field: "id".into(),
                    message: format!("must be {id:?}, the id in the path (ids cannot be renamed)"),
                })
            }
        }
    }
    let config: StreamConfig = match decode(value) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match api.streams.replace(&id, config).await {
        Ok(view) => ok(StatusCode::OK, view),
        Err(e) => stream_error(e),
    }
}

async fn remove(_: Authed, State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.streams.delete(&id).await {
        Ok(()) => ok(StatusCode::OK, json!({ "deleted": id })),
        Err(e) => stream_error(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    command: String,
}

async fn command(
    _: Authed,
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    if api.streams.get(&id).is_none() {
        return stream_error(StreamError::NotFound(id));
    }
    let value = match read_json(body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let cmd: CommandBody = match decode(value) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match api.streams.command(&id, &cmd.command) {
        Ok(()) => ok(StatusCode::OK, api.streams.get(&id)),
        Err(e) => stream_error(e),
    }
}

async fn report(_: Authed, State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.streams.report(&id) {
        Some(r) => ok(StatusCode::OK, r),
        None => stream_error(StreamError::NotFound(id)),
    }
}

async fn recordings(_: Authed, State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.streams.recordings(&id) {
        Ok(r) => ok(StatusCode::OK, r),
        Err(e) => stream_error(e),
    }
}

async fn unknown(_: Authed) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such API endpoint (see /api/v1/streams)",
        None,
    )
}

async fn metrics(_: Authed, State(api): State<Api>) -> Response {
    let text = super::metrics::render(&api.streams.samples(), api.streams.engine_load());
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}
