//! What the server offers browsers and plain HTTP clients, on the gRPC port:
//! the console's pages, the API as Connect JSON (curl works), and grpc-web
//! for generated browser clients. A tower layer in front of the gRPC
//! routes sends each request where its content type says; gRPC requests
//! pass straight through, so nothing changes for gRPC clients.

mod assets;
pub mod connect;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, util::BoxCloneSyncService};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The gRPC service stack (interceptors, metrics, routes), as the bridge calls it.
pub type Inner = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// Settings of the browser side.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WebArgs {
    /// Origins (scheme://host[:port]) whose pages may call the API from a
    /// browser (CORS); none by default, so only the console served here can.
    /// Repeatable, or comma-separated in the environment.
    #[arg(long = "web-cors-origin", env = "REPRISE_WEB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Do not serve the console's pages (the API over HTTP stays).
    #[arg(long, env = "REPRISE_NO_CONSOLE")]
    pub no_console: bool,
}

/// Wraps the gRPC routes with the browser side.
#[derive(Clone)]
pub struct WebLayer {
    bridge: Arc<connect::Bridge>,
    console: bool,
}

impl WebLayer {
    pub fn new(args: &WebArgs) -> anyhow::Result<WebLayer> {
        Ok(WebLayer { bridge: Arc::new(connect::Bridge::new()?), console: !args.no_console })
    }
}

/// CORS for the configured origins, or None (CORS off) when there are none.
/// An origin must be `http(s)://host[:port]`, nothing after it.
pub fn cors(args: &WebArgs) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if args.cors_origins.is_empty() {
        return Ok(None);
    }
    let mut origins = Vec::new();
    for origin in args.cors_origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/')) || origin.len() > 256 {
            anyhow::bail!("--web-cors-origin {origin:?} is not an origin: give scheme://host[:port], nothing after it");
        }
        origins.push(HeaderValue::from_str(origin)?);
    }
    let names = |list: &[&'static str]| list.iter().map(|n| http::HeaderName::from_static(n)).collect::<Vec<_>>();
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::GET])
            .allow_headers(names(&[
                "authorization",
                "content-type",
                "connect-protocol-version",
                "connect-timeout-ms",
                "grpc-timeout",
                "x-grpc-web",
                "x-user-agent",
            ]))
            .expose_headers(names(&["grpc-status", "grpc-message", "grpc-status-details-bin"]))
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

impl<S, B> Layer<S> for WebLayer
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Service = WebService;

    fn layer(&self, inner: S) -> WebService {
        let inner: Inner = BoxCloneSyncService::new(inner.map_response(|r| r.map(Body::new)).map_err(Into::into));
        let grpc_web: Inner = BoxCloneSyncService::new(tonic_web::GrpcWebLayer::new().layer(inner.clone()));
        WebService { inner, grpc_web, bridge: self.bridge.clone(), console: self.console }
    }
}

/// Routes each request by its content type and path.
#[derive(Clone)]
pub struct WebService {
    inner: Inner,
    grpc_web: Inner,
    bridge: Arc<connect::Bridge>,
    console: bool,
}

/// Where a request goes.
enum Route {
    Grpc,
    GrpcWeb,
    ConnectUnary,
    ConnectStream,
    Page,
    NotFound,
}

fn route(request: &Request<Body>) -> Route {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    match (request.method(), content_type.as_deref()) {
        (_, Some(t)) if t.starts_with("application/grpc-web") => Route::GrpcWeb,
        (_, Some(t)) if t.starts_with("application/grpc") => Route::Grpc,
        (&Method::POST, Some("application/json")) => Route::ConnectUnary,
        (&Method::POST, Some("application/connect+json")) => Route::ConnectStream,
        (&Method::GET | &Method::HEAD, _) => Route::Page,
        _ => Route::NotFound,
    }
}

impl Service<Request<Body>> for WebService {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call clones what it needs and waits for readiness itself (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match route(&request) {
            Route::Grpc => Box::pin(self.inner.clone().oneshot(request)),
            Route::GrpcWeb => Box::pin(self.grpc_web.clone().oneshot(request)),
            Route::ConnectUnary | Route::ConnectStream => {
                let Some(method) = self.bridge.method(request.uri().path()) else {
                    let status = tonic::Status::unimplemented(format!(
                        "no such method {}: call POST /reprise.v1.<Service>/<Method>",
                        crate::domain::limits::quote(request.uri().path())
                    ));
                    let mut response = Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from(
                        self.bridge.error_json(&status).to_string(),
                    ))));
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    return ready(response);
                };
                let (bridge, inner) = (self.bridge.clone(), self.inner.clone());
                let streaming = matches!(route(&request), Route::ConnectStream);
                Box::pin(async move {
                    Ok(if streaming {
                        bridge.stream(inner, method, request).await
                    } else {
                        bridge.unary(inner, method, request).await
                    })
                })
            }
            Route::Page if self.console => ready(assets::page(request.uri().path(), request.method() == Method::HEAD)),
            Route::Page | Route::NotFound => ready(not_found(
                "not found: the API answers POST with Content-Type application/json (Connect), application/grpc or application/grpc-web",
            )),
        }
    }
}

fn ready(response: Response<Body>) -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
    Box::pin(std::future::ready(Ok(response)))
}

fn not_found(message: &'static str) -> Response<Body> {
    let mut response =
        Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from_static(message.as_bytes()))));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
