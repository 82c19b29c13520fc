//! `POST /experiments/assign`: the seed's JSON API on the HTTP port.
//!
//! Request: `{"user_id": "u-1", "session_id": "s-1", "context":
//! {"page_type": "product_detail", "placement": "you_may_also_like",
//! "country": "US", "device": "mobile", "attributes": {"app_version":
//! "5.3.1"}}, "defer_exposure": false}` (every field optional but one id).
//! Unknown fields are ignored, so the seed's bodies pass verbatim.
//!
//! Answer: `{"experiment_id": "reco_ymal_v1", "variant": "treatment",
//! "params": {"model_version": "v3", "rerank_weight_price": 0.2},
//! "assignments": [...], "unit_type": "user", "config_version": 42}`;
//! numbers stay numbers. Bad input: 400 with `{"error": {"code":
//! "INVALID_ARGUMENT", "message": ..., "field_violations": [{"field",
//! "description"}]}}`; a body over the 2 MB limit: 413 with code
//! `OUT_OF_RANGE`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    response::{IntoResponse, Response},
    routing::post,
};
use exp_core::{Error, evaluate::RequestContext};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::grpc::{AssignError, Assigner};

/// The routes of the JSON gateway.
pub fn router(assigner: Assigner) -> Router {
    Router::new()
        .route("/experiments/assign", post(assign))
        .with_state(assigner)
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct AssignBody {
    user_id: String,
    session_id: String,
    context: ContextBody,
    defer_exposure: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct ContextBody {
    page_type: String,
    placement: String,
    country: String,
    device: String,
    attributes: HashMap<String, String>,
}

#[derive(Debug, Serialize)]
struct AssignmentBody {
    experiment_id: String,
    variant: String,
    layer: String,
    params: Value,
    revision: u64,
    reason: &'static str,
    unit_type: &'static str,
    // Only in an assignment of reason `holdout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    holdout_id: Option<String>,
}

// The body is parsed whatever its Content-Type says: rec services in the
// field send JSON without always labelling it.
async fn assign(State(assigner): State<Assigner>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        // Over axum's body limit, or cut off: the error table's answer
        // (OUT_OF_RANGE 413, or INVALID_ARGUMENT naming `body`), not
        // axum's plain text.
        Err(rejection) => {
            return error(
                &if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Error::TooLarge(format!(
                        "the body is over the limit: {}",
                        rejection.body_text()
                    ))
                } else {
                    Error::invalid("body", rejection.body_text())
                },
            );
        }
    };
    let body: AssignBody = match parse(&body) {
        Ok(body) => body,
        Err(invalid) => return error(&invalid),
    };
    let context = RequestContext {
        page_type: body.context.page_type,
        placement: body.context.placement,
        country: body.context.country,
        device: body.context.device,
        attributes: body.context.attributes,
    };
    match assigner.assign(
        &body.user_id,
        &body.session_id,
        &context,
        body.defer_exposure,
    ) {
        Ok(evaluation) => {
            let primary = evaluation.primary();
            let assignments: Vec<AssignmentBody> = evaluation
                .assignments
                .iter()
                .map(|a| AssignmentBody {
                    experiment_id: a.experiment_id.to_string(),
                    variant: a.variant.to_string(),
                    layer: a.layer.to_string(),
                    params: Value::Object((*a.params).clone()),
                    revision: a.revision,
                    reason: a.reason.as_str(),
                    holdout_id: a.holdout_id.as_deref().map(str::to_owned),
                    unit_type: a.unit_type.as_str(),
                })
                .collect();
            Json(json!({
                "experiment_id": primary.map(|a| a.experiment_id.to_string()),
                "variant": primary.map(|a| a.variant.to_string()),
                "params": Value::Object(evaluation.params()),
                "assignments": assignments,
                "unit_type": evaluation.unit_type.as_str(),
                "config_version": evaluation.config_version,
                "holdouts": evaluation.holdouts.iter().map(|membership| json!({
                    "holdout_id": membership.holdout_id.as_ref(),
                    "group": membership.group(),
                    "revision": membership.revision,
                    "unit_type": membership.unit_type.as_str(),
                })).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(AssignError::NoConfig) => error(&Error::Unavailable(
            "no experiment config received yet; retry shortly".into(),
        )),
        Err(AssignError::Invalid(invalid)) => error(&invalid),
    }
}

/// The request of `body`; a bad one names the field at fault by its path
/// (`context.attributes.app_version`), or `body` when the JSON itself is
/// malformed or not an object.
fn parse(body: &[u8]) -> Result<AssignBody, Error> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|failed| {
        let path = failed.path().to_string();
        let inner = failed.into_inner();
        // serde reads a struct from an array too, field by field in
        // order: a bad array would be named by position (`[0]`), which
        // names nothing of the request.
        let whole = path == "." || path.starts_with('[');
        let field = if whole || inner.is_syntax() || inner.is_eof() {
            "body".to_owned()
        } else {
            path
        };
        Error::invalid(
            field,
            format!("the body must be a JSON assignment request: {inner}"),
        )
    })
}

/// An error answer, from the one table of error codes the gRPC edge uses
/// too.
fn error(error: &Error) -> Response {
    let (status, body) = exp_proto::to_http(error);
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse(body.as_bytes()) {
            Err(Error::InvalidArgument(violations)) => violations[0].field.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_json_value_is_named_by_its_path_and_malformed_json_by_body() {
        assert_eq!(field_of(r#"{"user_id": 7}"#), "user_id");
        assert_eq!(
            field_of(r#"{"context": {"attributes": {"app_version": 5}}}"#),
            "context.attributes.app_version"
        );
        assert_eq!(field_of(r#"{"defer_exposure": "yes"}"#), "defer_exposure");
        assert_eq!(field_of(r#"{"user_id": "u-1""#), "body");
        assert_eq!(field_of(r#""just a string""#), "body");
        // Found by the fuzz suite: an array was named by position.
        assert_eq!(field_of("[null]"), "body");
        assert_eq!(field_of(r#"["u-1", "s-1", 7]"#), "body");
        assert!(parse(br#"{"user_id": "u-1", "unknown": true}"#).is_ok());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_answered_413_out_of_range_in_the_json_error() {
        // Found by the fuzz suite: axum's own rejection answered in plain
        // text, which a caller reading the error body cannot parse.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (queue, _records) = crate::ExposureQueue::bounded(1);
        let clock = std::sync::Arc::new(exp_core::SystemClock);
        let assigner = Assigner::new(crate::SnapshotCell::new(), queue, clock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router(assigner)).await });
        let body = vec![b' '; 2 * 1024 * 1024 + 1];
        let head = format!(
            "POST /experiments/assign HTTP/1.1\r\nHost: localhost\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        // The server may answer before it has read all it was sent.
        let sending = tokio::spawn(async move {
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(&body).await;
            writer
        });
        let mut answer = Vec::new();
        reader.read_to_end(&mut answer).await.expect("answer");
        drop(sending.await);
        let answer = String::from_utf8(answer).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").expect("a body");
        let body: Value = serde_json::from_str(body).expect("a JSON error");
        assert_eq!(body["error"]["code"], "OUT_OF_RANGE");
    }
}
