//! What a gRPC call must show before it takes a slot: its whole request,
//! within `--read-timeout` and its service's size limit. Only then does it
//! take one of `--max-concurrent-requests` slots (or is refused at once
//! with RESOURCE_EXHAUSTED). A client whose headers arrive but whose body
//! never does holds a stream of its own connection, never a slot others
//! need, and is answered DEADLINE_EXCEEDED when the read timeout passes.
//!
//! The bytes of all request bodies held at once are bounded too
//! ([`BODY_BUDGET`], 256 MiB): past it a call is refused
//! RESOURCE_EXHAUSTED, so many stalled or large bodies cannot grow memory
//! without bound. A request the service cannot decode is answered
//! INVALID_ARGUMENT from the error table (tonic answers INTERNAL).
//!
//! | service | largest request | takes a slot |
//! |---|---|---|
//! | `AdminService`, `EventService` | 4 MiB | yes |
//! | `AssignmentService` | 256 KiB | yes |
//! | `ConfigService`, `ResultsService` | 64 KiB | yes |
//! | `grpc.health.v1.Health` | 4 KiB | no: probes answer under load |
//! | `grpc.reflection.*` | not read ahead (a bidirectional stream) | no |

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use exp_core::Error;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

/// The largest request of `AdminService` and `EventService`.
pub const LARGE_REQUEST: usize = 4 << 20;
/// The largest `Assign` request.
pub const ASSIGN_REQUEST: usize = 256 << 10;
/// The largest request of `ConfigService` and `ResultsService`.
pub const SMALL_REQUEST: usize = 64 << 10;
/// The largest health check.
pub const HEALTH_REQUEST: usize = 4 << 10;
/// Bytes of request bodies being read or served at once, over every
/// connection: past it a call is refused RESOURCE_EXHAUSTED instead of
/// growing memory (the stalled bodies of many clients each stay under
/// their method's limit, not under this).
pub const BODY_BUDGET: usize = 256 << 20;
/// How long a refused call should wait before it retries.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// The message prost's decode errors begin with (tonic-prost answers them
/// INTERNAL).
const DECODE_ERROR: &str = "failed to decode Protobuf message";

/// How a call of one path is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Passed through as it comes.
    Stream,
    /// Read whole (at most `limit` bytes of gRPC frames) before it runs;
    /// `slot`: it then needs a concurrency slot.
    Read { limit: usize, slot: bool },
}

fn rule(path: &str) -> Rule {
    let service = path
        .strip_prefix('/')
        .and_then(|path| path.split('/').next())
        .unwrap_or_default();
    match service {
        "experiments.v1.AssignmentService" => Rule::Read {
            limit: ASSIGN_REQUEST,
            slot: true,
        },
        "experiments.v1.ConfigService" | "experiments.v1.ResultsService" => Rule::Read {
            limit: SMALL_REQUEST,
            slot: true,
        },
        "grpc.health.v1.Health" => Rule::Read {
            limit: HEALTH_REQUEST,
            slot: false,
        },
        service if service.starts_with("grpc.reflection.") => Rule::Stream,
        _ => Rule::Read {
            limit: LARGE_REQUEST,
            slot: true,
        },
    }
}

/// The layer: `max_concurrent` slots, requests read within `read_timeout`.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    read_timeout: Duration,
}

impl AdmissionLayer {
    /// `max_concurrent` calls run at once; a request must arrive whole
    /// within `read_timeout`.
    pub fn new(max_concurrent: usize, read_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            budget: Arc::new(Semaphore::new(BODY_BUDGET)),
            read_timeout,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            slots: self.slots.clone(),
            budget: self.budget.clone(),
            read_timeout: self.read_timeout,
        }
    }
}

/// The service of [`AdmissionLayer`].
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    read_timeout: Duration,
}

/// Why a request body was not read.
enum Unread {
    /// Over its method's limit.
    TooLarge,
    /// Every byte of [`BODY_BUDGET`] is held by other requests.
    OverBudget,
    /// The stream broke.
    Broken(String),
}

/// Reads `body` whole, at most `limit` bytes, each byte taken from
/// `budget` (held until the returned permit is dropped).
async fn read_body(
    body: Body,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<(axum::body::Bytes, Option<OwnedSemaphorePermit>), Unread> {
    let mut body = std::pin::pin!(Limited::new(body, limit));
    let mut buffer = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if error.is::<LengthLimitError>() {
                Unread::TooLarge
            } else {
                Unread::Broken(error.to_string())
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let wanted = u32::try_from(data.len()).map_err(|_| Unread::TooLarge)?;
        let permit = budget
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| Unread::OverBudget)?;
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        buffer.extend_from_slice(&data);
    }
    Ok((buffer.into(), held))
}

type Body = tonic::body::Body;

impl<S> Service<http::Request<Body>> for Admission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the call, once its
        // request is in.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let (slots, read_timeout) = (self.slots.clone(), self.read_timeout);
        let budget = self.budget.clone();
        Box::pin(async move {
            let Rule::Read { limit, slot } = rule(request.uri().path()) else {
                return inner.oneshot(request).await;
            };
            let (parts, body) = request.into_parts();
            let read = tokio::time::timeout(read_timeout, read_body(body, limit, &budget)).await;
            let (bytes, _budget) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(Unread::TooLarge)) => {
                    return Ok(refusal(Error::TooLarge(format!(
                        "the request is over the {limit} bytes {} takes",
                        parts.uri.path()
                    ))));
                }
                Ok(Err(Unread::OverBudget)) => {
                    return Ok(refusal(Error::Overloaded {
                        message: "too many request bytes are being read; retry with backoff".into(),
                        retry_after: RETRY_AFTER,
                    }));
                }
                // The client reset the stream: no one reads an answer.
                Ok(Err(Unread::Broken(error))) => {
                    return Ok(tonic::Status::cancelled(format!(
                        "the request body broke off: {error}"
                    ))
                    .into_http());
                }
                Err(_) => {
                    return Ok(refusal(Error::RequestTimeout(format!(
                        "the request did not arrive within the {read_timeout:?} read timeout"
                    ))));
                }
            };
            let _slot = match slot.then(|| slots.try_acquire_owned()) {
                Some(Err(_)) => {
                    return Ok(refusal(Error::Overloaded {
                        message: "too many calls in flight; retry with backoff".into(),
                        retry_after: RETRY_AFTER,
                    }));
                }
                Some(Ok(permit)) => Some(permit),
                None => None,
            };
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
            let mut response = inner.oneshot(request).await?;
            undecodable_is_invalid_argument(response.headers_mut());
            Ok(response)
        })
    }
}

fn refusal(error: Error) -> http::Response<Body> {
    exp_proto::to_status(error).into_http()
}

/// tonic-prost answers a request it cannot decode INTERNAL; the error
/// table says INVALID_ARGUMENT, naming what prost could not read.
fn undecodable_is_invalid_argument(headers: &mut http::HeaderMap) {
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if status.code() != tonic::Code::Internal || !status.message().starts_with(DECODE_ERROR) {
        return;
    }
    let reason = status
        .message()
        .trim_start_matches(DECODE_ERROR)
        .trim_start_matches(':')
        .trim();
    let answer = exp_proto::to_status(Error::invalid(
        "request",
        format!("not a valid protobuf message of this method: {reason}"),
    ));
    // The status fits in headers: it was built from the bounded table.
    let _ = answer.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_their_service_limits() {
        assert_eq!(
            rule("/experiments.v1.AssignmentService/Assign"),
            Rule::Read {
                limit: ASSIGN_REQUEST,
                slot: true
            }
        );
        assert_eq!(
            rule("/grpc.health.v1.Health/Check"),
            Rule::Read {
                limit: HEALTH_REQUEST,
                slot: false
            }
        );
        assert_eq!(
            rule("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Rule::Stream
        );
        assert_eq!(
            rule("/experiments.v1.EventService/LogExposures"),
            Rule::Read {
                limit: LARGE_REQUEST,
                slot: true
            }
        );
    }

    #[test]
    fn a_decode_error_becomes_invalid_argument_naming_the_request() {
        let mut headers = http::HeaderMap::new();
        tonic::Status::internal(
            "failed to decode Protobuf message: AssignRequest.user_id: invalid wire type",
        )
        .add_header(&mut headers)
        .expect("headers");
        undecodable_is_invalid_argument(&mut headers);
        let status = tonic::Status::from_header_map(&headers).expect("status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("AssignRequest.user_id: invalid wire type"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn other_internal_errors_are_left_alone() {
        let mut headers = http::HeaderMap::new();
        tonic::Status::internal("something else")
            .add_header(&mut headers)
            .expect("headers");
        undecodable_is_invalid_argument(&mut headers);
        let status = tonic::Status::from_header_map(&headers).expect("status");
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
