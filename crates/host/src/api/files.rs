//! `/api/v4/files`: a file and its `FileInfo`, for whoever may read the channel of
//! the post holding it (or its uploader, before any post holds it), as Mattermost.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::credentials::current_user;
use super::error::{ApiError, ApiResult};
use crate::store::FileInfo;
use crate::Host;

/// The file if the request's user may see it; else Mattermost's errors (401 without a
/// login, 404 for an unknown id, 403 without access to the channel).
async fn readable(host: &Host, h: &HeaderMap, id: &str) -> Result<FileInfo, ApiError> {
    let u = current_user(host, h, &Method::GET).await?;
    if !calls_wire::ids::is_valid_id(id) {
        return Err(ApiError::bad(
            "api.context.invalid_url_param.app_error",
            "Invalid or missing file_id parameter in request URL.",
        ));
    }
    let info = host
        .store
        .file_info(id)
        .await?
        .ok_or_else(|| ApiError::not_found("file"))?;
    let allowed = if info.post_id.is_empty() {
        info.creator_id == u.id
    } else {
        let channel = match host.store.post(&info.post_id).await? {
            Some(p) if p.delete_at == 0 => p.channel_id,
            _ => return Err(ApiError::not_found("file")),
        };
        crate::auth::has_channel_permission(&host.store, &u.id, &channel, "read_channel").await?
    };
    if !allowed {
        return Err(ApiError::forbidden());
    }
    Ok(info)
}

pub(super) async fn get_file_info(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(Json(readable(&host, &h, &id).await?).into_response())
}

pub(super) async fn get_file(
    State(host): State<Host>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let info = readable(&host, &h, &id).await?;
    let (file, len) = host.files.open(&info.path).await.map_err(|e| {
        tracing::error!(file_id = info.id, error = %e, "stored file unreadable");
        ApiError::not_found("file")
    })?;
    let body = Body::from_stream(futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    }));
    let mut r = Response::new(body);
    let hd = r.headers_mut();
    let ct = HeaderValue::from_str(&info.mime_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    hd.insert(header::CONTENT_TYPE, ct);
    hd.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // As Mattermost: downloaded, never rendered in our origin.
    let name: String = info
        .name
        .chars()
        .map(|c| if c == '"' || c == '\\' { '_' } else { c })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        hd.insert(header::CONTENT_DISPOSITION, v);
    }
    hd.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}
