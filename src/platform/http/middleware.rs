//! Middleware every response passes through. Order (outermost first), set in `app.rs`:
//! request id → tracing span → security headers → CORS → metrics → error envelope.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use futures_util::StreamExt;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{Error, HttpMessage, web};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

use super::error::{AppError, envelope_for_status};
use crate::platform::metrics::Metrics;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of the current request: the caller's `X-Request-Id` when it is sane, else a new
/// UUID v7. It is echoed in the response and appears in every log line of the request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(res)
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// Refuses a query string holding a NUL (`%00`): no parameter of ours can contain one, and
/// PostgreSQL could not store or compare it.
pub async fn refuse_nul_query(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, Error> {
    // `%00` has no letters, so no case to fold; a raw NUL never gets past the HTTP parser.
    if req.query_string().contains("%00") {
        let response = actix_web::ResponseError::error_response(&super::AppError::bad_request(
            "The query string must not contain NUL characters.",
        ));
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Security headers on every response (DESIGN.md §2, Errors).
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let https = req.connection_info().scheme() == "https";
    let api = req.path().starts_with("/api/");
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let mut set_default = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set_default(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set_default(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_default(header::REFERRER_POLICY, "no-referrer");
    set_default(header::X_FRAME_OPTIONS, "DENY");
    if https {
        set_default(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    if api {
        set_default(header::CACHE_CONTROL, "no-store");
    }
    Ok(res)
}

/// Counts and times every request by its matched route pattern (bounded cardinality).
pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = res.request().match_pattern();
        metrics.observe_request(
            res.request().method(),
            route.as_deref(),
            res.status(),
            started.elapsed(),
        );
    }
    Ok(res)
}

/// Gives responses actix made itself (404 of an unknown route, 405, a body-limit 413…) the
/// error envelope. Responses that already carry JSON pass unchanged.
pub fn envelope_errors<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (content_type, body) = envelope_for_status(res.status());
    let res = res.map_body(|head, _old_body| {
        head.headers.insert(header::CONTENT_TYPE, content_type);
        head.headers.remove(header::CONTENT_LENGTH);
        EitherBody::<B, BoxBody>::right(BoxBody::new(body))
    });
    Ok(ErrorHandlerResponse::Response(res))
}

/// The root span of each request: method, route, request id, status, and a `user_id` slot
/// the auth extractor fills in. Server errors are logged with their cause here, once.
pub struct CompanionRootSpan;

impl RootSpanBuilder for CompanionRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.path(),
            request_id = %request_id,
            user_id = tracing::field::Empty,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(res) => (res.status(), res.response().error()),
            Err(err) => (err.as_response_error().status_code(), Some(err)),
        };
        span.record("status", status.as_u16());
        let _entered = span.enter();
        if status.is_server_error() {
            let cause = error.map(|e| match e.as_error::<AppError>() {
                Some(app) => format!("{app}"),
                None => e.to_string(),
            });
            tracing::error!(cause = cause.as_deref().unwrap_or(""), "request failed");
        } else {
            tracing::info!("request finished");
        }
    }
}

/// How long a request body may take: at most `idle` between two pieces, `total` in all.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    pub idle: Duration,
    pub total: Duration,
}

/// Makes a request body that stalls or drags fail the handler reading it, and answers 408 with
/// the connection closed, whatever the handler made of the failure. A WebSocket's stream is
/// left alone: it lives as long as the connection and has its own liveness checks.
pub async fn body_timeout(
    limits: BodyTimeouts,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if upgrade || !has_body {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + limits.total;
    let state = (req.take_payload(), timed_out.clone());
    let body = futures_util::stream::unfold(Some(state), move |state| async move {
        let (mut payload, timed_out) = state?;
        let until = deadline.min(tokio::time::Instant::now() + limits.idle);
        match tokio::time::timeout_at(until, payload.next()).await {
            Ok(Some(piece)) => Some((piece, Some((payload, timed_out)))),
            Ok(None) => None,
            Err(_) => {
                timed_out.store(true, Ordering::Relaxed);
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body took too long",
                );
                Some((Err(PayloadError::Io(error)), None))
            }
        }
    })
    // Readers (multipart) may poll again after the end: it stays the end.
    .fuse();
    req.set_payload(Payload::Stream {
        payload: Box::pin(body),
    });
    let res = next.call(req).await?;
    if !timed_out.load(Ordering::Relaxed) {
        return Ok(res.map_into_left_body());
    }
    let mut response = actix_web::ResponseError::error_response(&AppError::new(
        super::ErrorCode::RequestTimeout,
        "The request body took too long to arrive.",
    ));
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    Ok(res.into_response(response).map_into_right_body())
}
