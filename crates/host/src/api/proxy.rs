//! The plugin's own routes (`/plugins/com.mattermost.calls/...`) streamed to it over
//! gRPC, its static files and metrics, and the page at `/`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::credentials::session_from_headers;
use super::error::ApiError;
use crate::{Host, CALLS_PLUGIN_ID};
use calls_wire::proto;

use super::plugins::start_plugin;

/// The most of a request body the host passes to a plugin (its routes have their own,
/// smaller limits; Mattermost's `MaxFileSize` default is 100 MB).
pub(super) const MAX_PLUGIN_BODY: usize = 64 << 20;

/// A chunk of the client's body (or why it stopped) as the plugin receives it.
pub(super) fn body_part(chunk: Result<Bytes, axum::BoxError>) -> proto::HttpRequestPart {
    use proto::http_request_part::Part;
    proto::HttpRequestPart {
        part: Some(match chunk {
            Ok(b) => Part::Body(b.to_vec()),
            Err(e) => Part::BodyError(e.to_string()),
        }),
    }
}

pub(super) async fn plugin_proxy(
    State(host): State<Host>,
    method: Method,
    uri: Uri,
    h: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let safe = method == Method::GET || method == Method::HEAD;
    let (session_id, user_id) = match session_from_headers(&host, &h, safe).await {
        Ok(Some(s)) => s,
        Ok(None) => Default::default(),
        Err(e) => return e.into_response(),
    };
    let Some(mut client) = host.plugin_client(CALLS_PLUGIN_ID) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "app.plugin.not_found",
            "Unable to find the plugin.",
        )
        .into_response();
    };
    let path = uri
        .path()
        .strip_prefix("/plugins/com.mattermost.calls")
        .unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    let rel = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let headers = h
        .iter()
        .filter(|(k, _)| {
            // Credentials stay with the host; the plugin learns the user from user_id.
            let k = k.as_str();
            k != "authorization"
                && k != "cookie"
                && !k.eq_ignore_ascii_case(calls_wire::http::USER_HEADER)
        })
        .map(|(k, v)| proto::Header {
            name: k.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect();
    let head = proto::HttpRequest {
        method: method.as_str().to_string(),
        uri: rel,
        headers,
        body: Vec::new(),
        user_id,
        session_id,
    };
    // The body goes to the plugin as it comes, never held here: the plugin reads as
    // much as the route allows (nothing for a request it refuses) and answers; the
    // rest of the client's body is then not read at all.
    use futures_util::StreamExt;
    use proto::http_request_part::Part;
    let body = http_body_util::BodyExt::into_data_stream(http_body_util::Limited::new(
        body,
        MAX_PLUGIN_BODY,
    ))
    .map(body_part);
    let parts = futures_util::stream::once(async move {
        proto::HttpRequestPart {
            part: Some(Part::Head(head)),
        }
    })
    .chain(body);
    match client.serve_http(parts).await {
        Ok(r) => plugin_response(r.into_inner()),
        Err(e) => {
            tracing::error!(error = %e, "plugin ServeHTTP failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "app.plugin.unavailable",
                "The plugin is not available.",
            )
            .into_response()
        }
    }
}

pub(super) async fn plugin_static(State(host): State<Host>, Path(file): Path<String>) -> Response {
    if file.split('/').any(|s| s == ".." || s.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = host
        .plugins_dir()
        .join(CALLS_PLUGIN_ID)
        .join("webapp/dist")
        .join(&file);
    match tokio::fs::read(&path).await {
        Ok(b) => ([(header::CONTENT_TYPE, "application/javascript")], b).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(super) async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../../../webapp-stub/index.html"),
    )
        .into_response()
}

/// Starts the plugins enabled in the config (at host start).
pub async fn start_enabled_plugins(host: &Host) {
    let ids: Vec<String> = host
        .config
        .read()
        .pointer("/PluginSettings/PluginStates")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.get("Enable").and_then(Value::as_bool).unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    for id in ids {
        if let Err(e) = start_plugin(host, &id).await {
            tracing::error!(plugin_id = id, error = ?e, "cannot start plugin");
        }
    }
}

/// The metrics server: each plugin's metrics through its `ServeMetrics` hook.
pub fn metrics_router(host: Host) -> Router {
    Router::new()
        .route("/plugins/{plugin_id}/metrics", get(plugin_metrics))
        .with_state(host)
}

pub(super) async fn plugin_metrics(State(host): State<Host>, Path(id): Path<String>) -> Response {
    let Some(mut client) = host.plugin_client(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match client
        .serve_metrics(proto::HttpRequest {
            method: "GET".into(),
            uri: "/metrics".into(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => plugin_response(r.into_inner()),
        Err(e) => {
            tracing::error!(error = %e, "plugin ServeMetrics failed");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}

/// A plugin's `HttpResponse` as an HTTP response.
pub(super) fn plugin_response(r: proto::HttpResponse) -> Response {
    let mut resp = Response::new(axum::body::Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for hd in r.headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(hd.name.as_bytes()),
            HeaderValue::from_str(&hd.value),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}
