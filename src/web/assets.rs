//! The console's files, compiled into the binary: plain HTML, JavaScript and
//! CSS with no build step, so building the server needs only the Rust
//! toolchain. Served with headers that keep the page to itself: scripts and
//! calls only from this origin, never framed, no referrer, no sniffing.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use tonic::body::Body;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/console.js");
const STYLE: &str = include_str!("../../web/console.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file at `path`, or 404. The console is one page; its views live in
/// the fragment (`/#/executions/ID`), so every view reloads from `/`.
pub fn page(path: &str, head: bool) -> Response<Body> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => ("not found\n", "text/plain; charset=utf-8"),
    };
    let status = if body == "not found\n" { StatusCode::NOT_FOUND } else { StatusCode::OK };
    let bytes = if head { Bytes::new() } else { Bytes::from_static(body.as_bytes()) };
    let mut response = Response::new(Body::new(http_body_util::Full::new(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
