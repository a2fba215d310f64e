//! The Connect protocol (connectrpc.com/docs/protocol), JSON codec, as a
//! bridge onto the gRPC services in this process: a request is decoded from
//! proto3 JSON with the descriptors (prost-reflect), framed as gRPC and
//! handed to the very service stack a gRPC call reaches, interceptor and
//! all, so authentication, permissions, limits and audit are the same by
//! construction and no handler is written twice. The answer goes back as
//! JSON; a gRPC status becomes Connect's error JSON with its code, message
//! and details (each with its JSON form under `debug`).
//!
//! No maintained crate does this for tonic: `connectrpc` serves Connect
//! from its own generated code and message types, not from tonic services.
//!
//! Unary calls: `POST /reprise.v1.ExecutionService/GetExecution`,
//! `Content-Type: application/json`. Server streams (WatchExecution,
//! WatchTaskOutput): `Content-Type: application/connect+json`, enveloped
//! messages both ways, the end of the stream (and any error) in a last
//! envelope flagged 0x02.

use std::{convert::Infallible, time::Duration};

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};
use tonic::{Code, Status, body::Body};
use tower::ServiceExt;

use super::Inner;

/// The largest request body accepted, as gRPC's default receive limit.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The longest `Connect-Timeout-Ms` honoured (a day); longer is cut to it.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Envelope flag of the last message of a stream (Connect end-stream).
const END_STREAM: u8 = 0x02;

/// The services callable over Connect, with their descriptors.
pub struct Bridge {
    pool: DescriptorPool,
}

impl Bridge {
    /// Reprise's services and the health service; the google.rpc types are
    /// there to show error details as JSON.
    pub fn new() -> anyhow::Result<Bridge> {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
        pool.decode_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)?;
        pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)?;
        Ok(Bridge { pool })
    }

    /// The method a path names, if it is one of ours (`/package.Service/Method`).
    pub fn method(&self, path: &str) -> Option<MethodDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if !(service.starts_with("reprise.v1.") || service == "grpc.health.v1.Health") {
            return None;
        }
        self.pool.get_service_by_name(service)?.methods().find(|m| m.name() == method)
    }

    /// A unary call with a JSON body; the answer is JSON, or Connect's error JSON.
    pub async fn unary(&self, inner: Inner, method: MethodDescriptor, request: Request<Body>) -> Response<Body> {
        match self.try_unary(inner, &method, request).await {
            Ok(json) => json_response(StatusCode::OK, "application/json", json),
            Err(status) => {
                let error = self.error_json(&status);
                json_response(http_status(status.code()), "application/json", error.to_string().into())
            }
        }
    }

    async fn try_unary(
        &self,
        inner: Inner,
        method: &MethodDescriptor,
        request: Request<Body>,
    ) -> Result<Bytes, Status> {
        if method.is_client_streaming() || method.is_server_streaming() {
            return Err(Status::unimplemented(format!(
                "{} is a stream: call it with Content-Type application/connect+json (Connect streaming) or gRPC",
                method.full_name()
            )));
        }
        let (parts, body) = request.into_parts();
        refuse_compression(&parts.headers, "content-encoding")?;
        let json = read_body(body).await?;
        let input = from_json(method.input(), &json)?;
        let response = call(inner, method, &parts, input).await?;
        let (head, body) = response.into_parts();
        let collected =
            body.collect().await.map_err(|e| Status::internal(format!("the call failed inside the server: {e}")))?;
        let mut metadata = head.headers;
        if let Some(trailers) = collected.trailers() {
            metadata.extend(trailers.clone());
        }
        let mut data = collected.to_bytes();
        if let Some(status) = Status::from_header_map(&metadata).filter(|s| s.code() != Code::Ok) {
            return Err(status);
        }
        let message =
            next_frame(&mut data)?.ok_or_else(|| Status::internal("the call ended without an answer or a status"))?;
        to_json(method.output(), message)
    }

    /// A server-streaming call (application/connect+json): one enveloped
    /// JSON request in, enveloped JSON messages out, then the end-stream
    /// envelope with the error if there was one. The HTTP status is 200
    /// even for an error, as Connect streams have it.
    pub async fn stream(&self, inner: Inner, method: MethodDescriptor, request: Request<Body>) -> Response<Body> {
        let output = method.output();
        let started = self.start_stream(inner, &method, request).await;
        let pool = self.pool.clone();
        let error_json = move |status: &Status| error_json(&pool, status);
        let body = async_stream::stream! {
            let (head, mut body) = match started {
                Ok(response) => response.into_parts(),
                Err(status) => {
                    yield Ok::<_, Infallible>(http_body::Frame::data(end_stream(Some(error_json(&status)))));
                    return;
                }
            };
            let mut buffer = BytesMut::new();
            let mut metadata = head.headers;
            let mut failure = None;
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(e) => { failure = Some(Status::unavailable(format!("the stream broke: {e}"))); break; }
                };
                match frame.into_data() {
                    Ok(data) => {
                        buffer.extend_from_slice(&data);
                        let mut pending = buffer.split().freeze();
                        loop {
                            match next_frame(&mut pending) {
                                Ok(Some(message)) => match to_json(output.clone(), message) {
                                    Ok(json) => yield Ok(http_body::Frame::data(envelope(0, &json))),
                                    Err(status) => { failure = Some(status); break; }
                                },
                                Ok(None) => break,
                                Err(status) => { failure = Some(status); break; }
                            }
                        }
                        buffer.extend_from_slice(&pending);
                        if failure.is_some() { break; }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            metadata.extend(trailers);
                        }
                    }
                }
            }
            let status = failure.or_else(|| Status::from_header_map(&metadata).filter(|s| s.code() != Code::Ok));
            yield Ok(http_body::Frame::data(end_stream(status.as_ref().map(&error_json))));
        };
        let mut response = Response::new(Body::new(StreamBody::new(body)));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
        response
    }

    async fn start_stream(
        &self,
        inner: Inner,
        method: &MethodDescriptor,
        request: Request<Body>,
    ) -> Result<Response<Body>, Status> {
        if method.is_client_streaming() || !method.is_server_streaming() {
            return Err(Status::unimplemented(format!(
                "{} is not a server stream: call it with Content-Type application/json",
                method.full_name()
            )));
        }
        let (parts, body) = request.into_parts();
        refuse_compression(&parts.headers, "connect-content-encoding")?;
        let mut enveloped = read_body(body).await?;
        if enveloped.len() < 5 {
            return Err(Status::invalid_argument("the request is not one Connect envelope (flags, length, JSON)"));
        }
        let flags = enveloped.get_u8();
        let length = enveloped.get_u32() as usize;
        if flags != 0 || length != enveloped.len() {
            return Err(Status::invalid_argument(
                "the request must be exactly one uncompressed Connect envelope: flags 0, a 4-byte length, the JSON",
            ));
        }
        let input = from_json(method.input(), &enveloped)?;
        let response = call(inner, method, &parts, input).await?;
        Ok(response)
    }

    /// Connect's error JSON for a status: `code`, `message`, and `details`
    /// decoded from `grpc-status-details-bin`, each as `type`, `value`
    /// (base64 of the message) and `debug` (the message as JSON).
    pub fn error_json(&self, status: &Status) -> serde_json::Value {
        error_json(&self.pool, status)
    }
}

/// [`Bridge::error_json`].
fn error_json(pool: &DescriptorPool, status: &Status) -> serde_json::Value {
    {
        let mut error = serde_json::json!({ "code": code_name(status.code()), "message": status.message() });
        if let Ok(rpc_status) = tonic_types::pb::Status::decode(status.details())
            && !rpc_status.details.is_empty()
        {
            let details: Vec<serde_json::Value> = rpc_status
                .details
                .iter()
                .map(|any| {
                    let name = any.type_url.rsplit('/').next().unwrap_or_default();
                    let mut detail = serde_json::json!({
                        "type": name,
                        "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
                    });
                    if let Some(descriptor) = pool.get_message_by_name(name)
                        && let Ok(message) = DynamicMessage::decode(descriptor, any.value.as_slice())
                        && let Ok(debug) = serde_json::to_value(&message)
                    {
                        detail["debug"] = debug;
                    }
                    detail
                })
                .collect();
            error["details"] = serde_json::Value::Array(details);
        }
        error
    }
}

/// Calls the gRPC service stack in-process with `input`, carrying over what
/// identifies the caller (the authorization header; the connection's
/// extensions: peer address, client certificate) and the deadline.
async fn call(
    inner: Inner,
    method: &MethodDescriptor,
    parts: &http::request::Parts,
    input: DynamicMessage,
) -> Result<Response<Body>, Status> {
    let payload = input.encode_to_vec();
    let mut framed = BytesMut::with_capacity(payload.len() + 5);
    framed.put_u8(0);
    framed.put_u32(payload.len() as u32);
    framed.extend_from_slice(&payload);
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let mut request = Request::new(Body::new(http_body_util::Full::new(framed.freeze())));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = path.parse().map_err(|_| Status::internal("the method has no usable path"))?;
    *request.version_mut() = http::Version::HTTP_2;
    *request.extensions_mut() = parts.extensions.clone();
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(authorization) = parts.headers.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, authorization.clone());
    }
    if let Some(timeout) = connect_timeout(&parts.headers)? {
        let millis = timeout.as_millis().min(99_999_999);
        headers.insert("grpc-timeout", HeaderValue::from_str(&format!("{millis}m")).expect("digits"));
    }
    inner.oneshot(request).await.map_err(|e| Status::internal(format!("the call failed inside the server: {e}")))
}

/// `Connect-Timeout-Ms`: at most 10 digits, cut to a day.
fn connect_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get("connect-timeout-ms") else { return Ok(None) };
    let text = value.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Status::invalid_argument(
            "Connect-Timeout-Ms must be a number of milliseconds (at most 10 digits)",
        ));
    }
    let millis: u64 = text.parse().map_err(|_| Status::invalid_argument("Connect-Timeout-Ms is not a number"))?;
    Ok(Some(Duration::from_millis(millis).min(MAX_TIMEOUT)))
}

fn refuse_compression(headers: &HeaderMap, name: &str) -> Result<(), Status> {
    match headers.get(name).map(|v| v.to_str().unwrap_or("?")) {
        None | Some("identity") => Ok(()),
        Some(other) => Err(Status::unimplemented(format!(
            "{name} {:?} is not supported: send the body uncompressed",
            crate::domain::limits::quote(other)
        ))),
    }
}

/// The request body, refused beyond [`MAX_REQUEST_BYTES`].
async fn read_body(body: Body) -> Result<Bytes, Status> {
    match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(format!("the request body is larger than {MAX_REQUEST_BYTES} bytes")))
        }
        Err(e) => Err(Status::invalid_argument(format!("the request body could not be read: {e}"))),
    }
}

/// Proto3 JSON to a message; an unknown field or a wrong type is INVALID_ARGUMENT.
fn from_json(descriptor: MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, Status> {
    let json = if json.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { json };
    let name = descriptor.full_name().to_owned();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    DynamicMessage::deserialize(descriptor, &mut deserializer)
        .and_then(|m| deserializer.end().map(|()| m))
        .map_err(|e| Status::invalid_argument(format!("the body is not a {name} in proto3 JSON: {e}")))
}

/// A message to proto3 JSON (camelCase names, enums by name, defaults left out).
fn to_json(descriptor: MessageDescriptor, bytes: Bytes) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(descriptor, bytes)
        .map_err(|e| Status::internal(format!("the answer could not be decoded: {e}")))?;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|e| Status::internal(format!("the answer could not be written as JSON: {e}")))?;
    Ok(out.into())
}

/// Takes one complete gRPC frame off `data`: None when none is complete.
fn next_frame(data: &mut Bytes) -> Result<Option<Bytes>, Status> {
    if data.len() < 5 {
        return Ok(None);
    }
    if data[0] != 0 {
        return Err(Status::internal("the answer was compressed, which this bridge never asks for"));
    }
    let length = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() < 5 + length {
        return Ok(None);
    }
    data.advance(5);
    Ok(Some(data.split_to(length)))
}

fn envelope(flags: u8, json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 5);
    out.put_u8(flags);
    out.put_u32(json.len() as u32);
    out.extend_from_slice(json);
    out.freeze()
}

fn end_stream(error: Option<serde_json::Value>) -> Bytes {
    let json = match error {
        Some(error) => serde_json::json!({ "error": error }),
        None => serde_json::json!({}),
    };
    envelope(END_STREAM, json.to_string().as_bytes())
}

fn json_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Connect's name of a gRPC code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status Connect gives a unary error of each code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("valid"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_of_ours_is_reachable_and_nothing_else() {
        let bridge = Bridge::new().expect("descriptors");
        assert!(bridge.method("/reprise.v1.ExecutionService/GetExecution").is_some());
        assert!(bridge.method("/reprise.v1.ExecutionService/WatchExecution").unwrap().is_server_streaming());
        assert!(bridge.method("/grpc.health.v1.Health/Check").is_some());
        assert!(bridge.method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_none());
        assert!(bridge.method("/reprise.v1.ExecutionService/Nope").is_none());
        assert!(bridge.method("reprise.v1.ExecutionService").is_none());
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut data = Bytes::from_static(&[0, 0, 0, 0, 2, 8]);
        assert_eq!(next_frame(&mut data).unwrap(), None);
        let mut data = Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1, 0, 0]);
        assert_eq!(next_frame(&mut data).unwrap().unwrap().as_ref(), &[8, 1]);
        assert_eq!(data.as_ref(), &[0, 0]);
    }
}
