//! The `Plugin` gRPC service: the hooks the host calls.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::{Notify, RwLock};
use tonic::{Request, Response, Status};
use tower::ServiceExt;

use super::activate::{activate, deactivate};
use super::api::USER_HEADER;
use super::app::App;
use super::config::{env_overrides, process_env, Config};
use calls_wire::proto::plugin_server::Plugin;
use calls_wire::proto::{self, Empty};

#[derive(Clone)]
pub struct Hooks {
    pub app: Arc<RwLock<Option<(App, axum::Router)>>>,
    pub shutdown: Arc<Notify>,
}

impl Hooks {
    pub fn new() -> Hooks {
        Hooks {
            app: Default::default(),
            shutdown: Arc::new(Notify::new()),
        }
    }

    async fn app(&self) -> Result<App, Status> {
        self.app
            .read()
            .await
            .as_ref()
            .map(|(a, _)| a.clone())
            .ok_or_else(|| Status::unavailable("plugin is not active"))
    }

    /// Deactivates (if active): sessions of this process are marked left.
    pub async fn stop(&self) {
        let taken = self.app.write().await.take();
        if let Some((app, _)) = taken {
            deactivate(&app).await;
        }
    }
}

impl Default for Hooks {
    fn default() -> Self {
        Self::new()
    }
}

/// The body chunks that follow a request's head, as an HTTP body stream; an error if
/// the host says the body is incomplete or the stream breaks.
fn body_of(
    parts: tonic::Streaming<proto::HttpRequestPart>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, BodyError>> {
    use futures_util::StreamExt;
    use proto::http_request_part::Part;
    parts.filter_map(|p| async move {
        match p {
            Ok(proto::HttpRequestPart {
                part: Some(Part::Body(b)),
            }) => Some(Ok(axum::body::Bytes::from(b))),
            Ok(proto::HttpRequestPart {
                part: Some(Part::BodyError(e)),
            }) => Some(Err(BodyError(e))),
            Ok(proto::HttpRequestPart {
                part: Some(Part::Head(_)),
            }) => Some(Err(BodyError("a second request head".into()))),
            Ok(proto::HttpRequestPart { part: None }) => None,
            Err(status) => Some(Err(BodyError(status.message().to_string()))),
        }
    })
}

#[derive(Debug, thiserror::Error)]
#[error("request body incomplete: {0}")]
struct BodyError(String);

fn http_response(status: u16, headers: Vec<proto::Header>, body: Vec<u8>) -> proto::HttpResponse {
    proto::HttpResponse {
        status: u32::from(status),
        headers,
        body,
    }
}

#[tonic::async_trait]
impl Plugin for Hooks {
    async fn on_activate(
        &self,
        req: Request<proto::ActivateRequest>,
    ) -> Result<Response<proto::ActivateResponse>, Status> {
        let req = req.into_inner();
        let mut slot = self.app.write().await;
        if slot.is_some() {
            return Ok(Response::new(proto::ActivateResponse::default()));
        }
        match activate(&req.host_address, &req.bundle_path).await {
            Ok(app) => {
                let router = super::api::router(app.clone());
                *slot = Some((app, router));
                tracing::info!("plugin activated");
                Ok(Response::new(proto::ActivateResponse::default()))
            }
            Err(e) => {
                tracing::error!(error = %e, "activation failed");
                Ok(Response::new(proto::ActivateResponse {
                    error: e.to_string(),
                }))
            }
        }
    }

    async fn on_deactivate(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.stop().await;
        self.shutdown.notify_one();
        Ok(Response::new(Empty {}))
    }

    async fn on_configuration_change(
        &self,
        req: Request<proto::ConfigurationChangeRequest>,
    ) -> Result<Response<proto::ConfigurationChangeResponse>, Status> {
        let app = self.app().await?;
        let raw = req.into_inner().config_json;
        match Config::check_saved(&raw).and_then(|()| Config::load(&raw, &process_env)) {
            Ok(cfg) => {
                *app.config.write() = Arc::new(cfg);
                *app.env_overrides.write() = env_overrides(&process_env);
                if let Ok(l) = app.host.license().await {
                    *app.license.write() = super::activate::license_info(&l);
                }
                tracing::info!("configuration applied");
                let app2 = app.clone();
                tokio::spawn(async move {
                    if let Err(e) = super::activate::apply_media_mode(&app2).await {
                        tracing::error!(error = %e, "media mode not applied: new calls fail until it is");
                    }
                    // Unlike upstream (activation only): enabling recordings or
                    // changing the job service takes effect without a restart.
                    super::recording::refresh_job_service(&app2).await;
                });
                Ok(Response::new(proto::ConfigurationChangeResponse::default()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "configuration refused; keeping the previous one");
                Ok(Response::new(proto::ConfigurationChangeResponse {
                    error: e.to_string(),
                }))
            }
        }
    }

    async fn serve_http(
        &self,
        req: Request<tonic::Streaming<proto::HttpRequestPart>>,
    ) -> Result<Response<proto::HttpResponse>, Status> {
        let mut parts = req.into_inner();
        let Some(proto::http_request_part::Part::Head(req)) =
            parts.message().await?.and_then(|p| p.part)
        else {
            return Err(Status::invalid_argument(
                "ServeHTTP: the request head must come first",
            ));
        };
        let router = match self.app.read().await.as_ref() {
            Some((_, r)) => r.clone(),
            None => {
                return Ok(Response::new(http_response(
                    503,
                    vec![],
                    b"plugin is not active\n".to_vec(),
                )))
            }
        };
        let mut b =
            http::Request::builder()
                .method(req.method.as_str())
                .uri(if req.uri.is_empty() {
                    "/"
                } else {
                    req.uri.as_str()
                });
        for h in &req.headers {
            // Only the host decides who the user is.
            if h.name.eq_ignore_ascii_case(USER_HEADER) {
                continue;
            }
            b = b.header(h.name.as_str(), h.value.as_str());
        }
        if !req.user_id.is_empty() {
            b = b.header(USER_HEADER, req.user_id.as_str());
        }
        // The body stays in the stream until a handler reads it (and only as far as
        // its limit): a request refused before that costs no body at all.
        let Ok(http_req) = b.body(Body::from_stream(body_of(parts))) else {
            return Ok(Response::new(http_response(
                400,
                vec![],
                b"Bad Request\n".to_vec(),
            )));
        };
        let resp = match router.oneshot(http_req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| proto::Header {
                name: k.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .unwrap_or_default();
        Ok(Response::new(http_response(status, headers, body)))
    }

    async fn serve_metrics(
        &self,
        _: Request<proto::HttpRequest>,
    ) -> Result<Response<proto::HttpResponse>, Status> {
        let app = self.app().await?;
        let (ct, body) = app.metrics.render();
        Ok(Response::new(http_response(
            200,
            vec![proto::Header {
                name: "content-type".into(),
                value: ct,
            }],
            body,
        )))
    }

    async fn on_web_socket_connect(
        &self,
        _: Request<proto::WebSocketConnectEvent>,
    ) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn on_web_socket_disconnect(
        &self,
        req: Request<proto::WebSocketConnectEvent>,
    ) -> Result<Response<Empty>, Status> {
        let app = self.app().await?;
        super::signaling::on_disconnect(&app, &req.into_inner().connection_id);
        Ok(Response::new(Empty {}))
    }

    async fn web_socket_message_has_been_posted(
        &self,
        req: Request<proto::WebSocketMessage>,
    ) -> Result<Response<Empty>, Status> {
        let app = self.app().await?;
        super::signaling::on_message(&app, req.into_inner()).await;
        Ok(Response::new(Empty {}))
    }

    async fn on_plugin_cluster_event(
        &self,
        req: Request<proto::PluginClusterEvent>,
    ) -> Result<Response<Empty>, Status> {
        let app = self.app().await?;
        let ev = req.into_inner();
        app.metrics
            .cluster_events
            .with_label_values(&[&ev.id])
            .inc();
        // Handled in order by one task; a full queue drops (as upstream's).
        if app.cluster_events.try_send(ev).is_err() {
            if let Some(left_out) = app.repeats.admit("cluster event queue full") {
                tracing::warn!(left_out, "cluster event dropped: the queue is full");
            }
        }
        Ok(Response::new(Empty {}))
    }
}
