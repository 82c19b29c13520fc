//! OpenFeature's Remote Evaluation Protocol (OFREP 0.3.0) on the HTTP
//! port, so any OpenFeature SDK with an OFREP provider asks `expd` for
//! variants unchanged. A flag is an experiment: its key is the
//! experiment's id, its value the variant's parameters (an object).
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: one experiment for one
//!   context, as `Assign` evaluates it, logging the exposure as `Assign`
//!   does (the caller asked for this flag to use it).
//! - `POST /ofrep/v1/evaluate/flags`: every experiment that gives the
//!   context a variant, for client-side providers that fetch all flags once
//!   and cache them. It logs no exposure: such a provider fetches on start
//!   and on every change, long before (or without) showing anything, so an
//!   exposure here would count units that never saw their variant; the
//!   page logs it through `EventService` when it renders. Its `ETag`
//!   changes with the config version and the context; `If-None-Match`
//!   with the current one answers 304.
//!
//! The context: `targetingKey` is the user id and `session_id` the session
//! id (either may be missing, as in `Assign`, not both); `placement`,
//! `page_type`, `country` and `device` are the request's; every other key
//! is an attribute (strings, numbers and booleans, as text).
//!
//! Reasons: `SPLIT` (bucketed), `TARGETING_MATCH` (a QA override),
//! `STATIC` (a shipped variant), `DISABLED` (the experiment serves no one
//! now: paused, a draft, outside its schedule), `DEFAULT` with no value
//! (the unit is not in the experiment: the caller's code default applies;
//! OFREP's ADR 0006; a unit held out of the experiment by a holdout gets
//! this too, with the holdout's id in `metadata.holdout_id`). Those two
//! carry `"variant": null`. A holdout is no flag: the bulk answer lists
//! experiments only, and names the holdouts keeping experiments from the
//! unit in `metadata.holdout_ids`. The single-flag call logs the unit's
//! holdout exposures for holdouts covering that experiment, as `Assign`
//! does.
//! Errors as the protocol names them: `FLAG_NOT_FOUND` (404),
//! `PARSE_ERROR`, `INVALID_CONTEXT`, `TARGETING_KEY_MISSING` (400), with
//! `errorDetails` naming the field.

use std::hash::Hasher;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use exp_core::{
    Error,
    evaluate::{Assignment, AssignmentReason, RequestContext, ServingState},
};
use serde_json::{Map, Value, json};

use crate::grpc::{AssignError, Assigner, count_assignment};

/// The OFREP routes.
pub fn router(assigner: Assigner) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_flag))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_flags))
        .with_state(assigner)
}

/// Context keys that are the request's own fields, not attributes.
const REQUEST_KEYS: [&str; 6] = [
    "targetingKey",
    "session_id",
    "placement",
    "page_type",
    "country",
    "device",
];

/// Why a request could not be evaluated, by the protocol's codes.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The body is not JSON.
    Parse(String),
    /// The body or a context value is not what the protocol allows.
    InvalidContext(String),
    /// Neither `targetingKey` nor `session_id`.
    TargetingKeyMissing,
}

impl Refusal {
    fn code(&self) -> &'static str {
        match self {
            Self::Parse(_) => "PARSE_ERROR",
            Self::InvalidContext(_) => "INVALID_CONTEXT",
            Self::TargetingKeyMissing => "TARGETING_KEY_MISSING",
        }
    }

    fn details(&self) -> String {
        match self {
            Self::Parse(details) | Self::InvalidContext(details) => details.clone(),
            Self::TargetingKeyMissing => {
                "context.targetingKey (the user id) or context.session_id \
                                          is required: the unit is one of them"
                    .to_owned()
            }
        }
    }
}

/// A request's unit and context.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlagContext {
    /// `targetingKey`.
    pub user_id: String,
    /// `session_id`.
    pub session_id: String,
    /// Everything else.
    pub context: RequestContext,
}

/// Reads `{"context": {...}}`.
pub fn read_request(body: &[u8]) -> Result<FlagContext, Refusal> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|error| Refusal::Parse(format!("the body is not JSON: {error}")))?;
    let Some(Value::Object(context)) = body.get("context") else {
        return Err(Refusal::InvalidContext(
            "the body must be an object with an object `context`: {\"context\": \
             {\"targetingKey\": \"u-1\", \"placement\": \"you_may_also_like\"}}"
                .into(),
        ));
    };
    let text = |key: &str| -> Result<String, Refusal> {
        match context.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(Refusal::InvalidContext(format!(
                "context.{key} must be a string, got {other}"
            ))),
        }
    };
    let read = FlagContext {
        user_id: text("targetingKey")?,
        session_id: text("session_id")?,
        context: RequestContext {
            placement: text("placement")?,
            page_type: text("page_type")?,
            country: text("country")?,
            device: text("device")?,
            attributes: context
                .iter()
                .filter(|(key, _)| !REQUEST_KEYS.contains(&key.as_str()))
                .filter_map(|(key, value)| {
                    let value = match value {
                        Value::Null => return None,
                        Value::String(text) => Ok(text.clone()),
                        Value::Bool(_) | Value::Number(_) => Ok(value.to_string()),
                        other => Err(Refusal::InvalidContext(format!(
                            "context.{key} must be a string, number or boolean (an attribute), got {other}"
                        ))),
                    };
                    Some(value.map(|value| (key.clone(), value)))
                })
                .collect::<Result<_, _>>()?,
        },
    };
    if read.user_id.is_empty() && read.session_id.is_empty() {
        return Err(Refusal::TargetingKeyMissing);
    }
    Ok(read)
}

/// An evaluation error in the protocol's terms: a bad input names its
/// context key.
fn refusal_of(error: Error) -> Refusal {
    match error {
        Error::InvalidArgument(violations) => Refusal::InvalidContext(
            violations
                .iter()
                .map(|violation| {
                    let field = match violation.field.as_str() {
                        "user_id" => "context.targetingKey".to_owned(),
                        "session_id" => "context.session_id".to_owned(),
                        other => other.replacen("context.attributes.", "context.", 1),
                    };
                    format!("{field}: {}", violation.description)
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => Refusal::InvalidContext(other.to_string()),
    }
}

fn reason(assignment: &Assignment) -> &'static str {
    match assignment.reason {
        AssignmentReason::Bucketed => "SPLIT",
        AssignmentReason::Override => "TARGETING_MATCH",
        AssignmentReason::Shipped => "STATIC",
        // Never a flag's answer (bulk answers leave them out); for the
        // ETag only.
        AssignmentReason::Holdout => "DEFAULT",
    }
}

/// A flag's answer for an assignment.
fn assigned(assignment: &Assignment, config_version: u64) -> Value {
    json!({
        "key": &*assignment.experiment_id,
        "value": Value::Object((*assignment.params).clone()),
        "reason": reason(assignment),
        "variant": &*assignment.variant,
        "metadata": {
            "experiment_id": &*assignment.experiment_id,
            "revision": assignment.revision,
            "layer": &*assignment.layer,
            "unit_type": assignment.unit_type.as_str(),
            "config_version": config_version,
        },
    })
}

/// A flag's answer when the unit got no variant: `DISABLED` when the
/// experiment serves no one now, else `DEFAULT` (not in it).
fn unassigned(state: &ServingState, config_version: u64) -> Value {
    json!({
        "key": &*state.id,
        "reason": if state.live { "DEFAULT" } else { "DISABLED" },
        // No variant, said explicitly: OpenFeature's Python OFREP provider
        // (0.3) reads the key unconditionally.
        "variant": Value::Null,
        "metadata": {
            "experiment_id": &*state.id,
            "revision": state.revision,
            "layer": &*state.layer,
            "status": state.status.as_str(),
            "config_version": config_version,
        },
    })
}

fn failure(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn unavailable(error: &AssignError) -> Response {
    let details = match error {
        AssignError::NoConfig => "no experiment config received yet; retry shortly".to_owned(),
        AssignError::Invalid(error) => error.to_string(),
    };
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"errorDetails": details}),
    )
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
async fn evaluate_flag(
    State(assigner): State<Assigner>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let refused = |refusal: Refusal| {
        failure(
            StatusCode::BAD_REQUEST,
            json!({"key": key, "errorCode": refusal.code(), "errorDetails": refusal.details()}),
        )
    };
    let request = match read_request(&body) {
        Ok(request) => request,
        Err(refusal) => return refused(refusal),
    };
    let evaluated = match assigner.evaluate(&request.user_id, &request.session_id, &request.context)
    {
        Ok(evaluated) => evaluated,
        Err(AssignError::Invalid(error)) => return refused(refusal_of(error)),
        Err(error) => return unavailable(&error),
    };
    let Some(state) = evaluated.snapshot.experiment(&key, evaluated.at) else {
        return failure(
            StatusCode::NOT_FOUND,
            json!({
                "key": key,
                "errorCode": "FLAG_NOT_FOUND",
                "errorDetails": format!(
                    "no experiment {key:?} serves: it does not exist, or it is a draft without \
                     QA overrides, completed, archived, or stopped without shipping a variant"
                ),
            }),
        );
    };
    let version = evaluated.evaluation.config_version;
    let found = evaluated
        .evaluation
        .assignments
        .iter()
        .find(|assignment| *assignment.experiment_id == *key);
    let mut held_out_by = None;
    for membership in evaluated.snapshot.holdouts_covering(
        &evaluated.evaluation,
        &key,
        &request.context.placement,
    ) {
        if membership.held_out {
            held_out_by = Some(membership.holdout_id.clone());
        }
        assigner.expose_holdout(
            membership,
            &request.user_id,
            &request.session_id,
            &request.context,
            evaluated.at,
        );
    }
    match found {
        Some(assignment) => {
            count_assignment(assignment);
            assigner.expose(
                assignment,
                &request.user_id,
                &request.session_id,
                &request.context,
                evaluated.at,
            );
            Json(assigned(assignment, version)).into_response()
        }
        None => {
            let mut answer = unassigned(&state, version);
            if let (Some(holdout_id), Some(metadata)) =
                (held_out_by, answer["metadata"].as_object_mut())
            {
                metadata.insert("holdout_id".into(), Value::from(&*holdout_id));
            }
            Json(answer).into_response()
        }
    }
}

/// The `ETag` of a bulk answer: the config version and a hash of the
/// request's unit and context and of what was answered (each flag's
/// experiment, revision, variant and reason: a schedule's start or end
/// changes the answer before the next version), with SipHash under fixed
/// keys, so replicas on the same version agree.
pub fn etag(config_version: u64, request: &FlagContext, answered: &[Assignment]) -> String {
    let mut hasher = siphasher::sip::SipHasher13::new();
    let mut attributes: Vec<(&String, &String)> = request.context.attributes.iter().collect();
    attributes.sort();
    let fields = [
        &request.user_id,
        &request.session_id,
        &request.context.placement,
        &request.context.page_type,
        &request.context.country,
        &request.context.device,
    ];
    let flags = answered.iter().flat_map(|assignment| {
        [
            assignment.experiment_id.to_string(),
            assignment.revision.to_string(),
            assignment.variant.to_string(),
            reason(assignment).to_owned(),
        ]
    });
    for field in fields
        .into_iter()
        .cloned()
        .chain(
            attributes
                .into_iter()
                .flat_map(|(key, value)| [key.clone(), value.clone()]),
        )
        .chain(flags)
    {
        // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
        hasher.write_usize(field.len());
        hasher.write(field.as_bytes());
    }
    format!("\"{config_version}-{:016x}\"", hasher.finish())
}

/// Whether `If-None-Match` names `etag` (weakly compared). `*` matches
/// nothing here: a client that has no flags cached must get them.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag)
}

/// `POST /ofrep/v1/evaluate/flags`.
async fn evaluate_flags(
    State(assigner): State<Assigner>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refused = |refusal: Refusal| {
        failure(
            StatusCode::BAD_REQUEST,
            json!({"errorCode": refusal.code(), "errorDetails": refusal.details()}),
        )
    };
    let request = match read_request(&body) {
        Ok(request) => request,
        Err(refusal) => return refused(refusal),
    };
    let evaluated = match assigner.evaluate(&request.user_id, &request.session_id, &request.context)
    {
        Ok(evaluated) => evaluated,
        Err(AssignError::Invalid(error)) => return refused(refusal_of(error)),
        Err(error) => return unavailable(&error),
    };
    let version = evaluated.evaluation.config_version;
    let tag = etag(version, &request, &evaluated.evaluation.assignments);
    if not_modified(&headers, &tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    let (holdouts, experiments): (Vec<&Assignment>, Vec<&Assignment>) = evaluated
        .evaluation
        .assignments
        .iter()
        .partition(|assignment| assignment.reason == AssignmentReason::Holdout);
    let flags: Vec<Value> = experiments
        .into_iter()
        .map(|assignment| assigned(assignment, version))
        .collect();
    let mut metadata = Map::new();
    metadata.insert("config_version".into(), version.into());
    if !holdouts.is_empty() {
        metadata.insert(
            "holdout_ids".into(),
            holdouts
                .iter()
                .filter_map(|assignment| assignment.holdout_id.as_deref())
                .collect::<Vec<_>>()
                .into(),
        );
    }
    (
        [(header::ETAG, tag)],
        Json(json!({"flags": flags, "metadata": metadata})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_maps_to_the_unit_the_request_fields_and_attributes() {
        let read = read_request(
            br#"{"context": {"targetingKey": "u-1", "session_id": "s-1", "placement": "pdp",
                "country": "DE", "app_version": "5.3.1", "vip": true, "visits": 12, "gone": null}}"#,
        )
        .expect("valid");
        assert_eq!(read.user_id, "u-1");
        assert_eq!(read.session_id, "s-1");
        assert_eq!(read.context.placement, "pdp");
        assert_eq!(read.context.country, "DE");
        assert_eq!(read.context.attributes.len(), 3);
        assert_eq!(read.context.attributes["vip"], "true");
        assert_eq!(read.context.attributes["visits"], "12");
        let session_only = read_request(br#"{"context": {"session_id": "s-9"}}"#).expect("valid");
        assert_eq!(session_only.user_id, "");
    }

    #[test]
    fn bad_requests_get_the_protocols_codes_with_the_field_named() {
        let code = |body: &[u8]| {
            read_request(body)
                .map(|_| ())
                .map_err(|r| (r.code(), r.details()))
        };
        assert_eq!(code(b"{not json").map_err(|e| e.0), Err("PARSE_ERROR"));
        assert_eq!(
            code(br#"{"ctx": {}}"#).map_err(|e| e.0),
            Err("INVALID_CONTEXT")
        );
        assert_eq!(
            code(br#"{"context": []}"#).map_err(|e| e.0),
            Err("INVALID_CONTEXT")
        );
        let (found, details) = code(br#"{"context": {"targetingKey": 7}}"#).expect_err("refused");
        assert_eq!(found, "INVALID_CONTEXT");
        assert!(details.contains("context.targetingKey"), "{details}");
        let (found, details) =
            code(br#"{"context": {"targetingKey": "u", "tags": ["a"]}}"#).expect_err("refused");
        assert_eq!(found, "INVALID_CONTEXT");
        assert!(details.contains("context.tags"), "{details}");
        assert_eq!(
            code(br#"{"context": {"placement": "pdp"}}"#).map_err(|e| e.0),
            Err("TARGETING_KEY_MISSING")
        );
    }

    #[test]
    fn an_evaluation_error_names_the_context_key_not_the_rpc_field() {
        let refusal = refusal_of(Error::InvalidArgument(vec![
            exp_core::FieldViolation::new("user_id", "is too long"),
            exp_core::FieldViolation::new("context.attributes.app_version", "is too long"),
        ]));
        assert_eq!(
            refusal.details(),
            "context.targetingKey: is too long; context.app_version: is too long"
        );
    }

    #[test]
    fn the_etag_follows_the_config_version_and_every_part_of_the_context() {
        let base =
            read_request(br#"{"context": {"targetingKey": "u-1", "placement": "pdp", "a": "1"}}"#)
                .expect("valid");
        let tag = etag(7, &base, &[]);
        assert_eq!(tag, etag(7, &base.clone(), &[]), "deterministic");
        assert_ne!(tag, etag(8, &base, &[]), "a new config version");
        let mut other = base.clone();
        other.context.attributes.insert("a".into(), "2".into());
        assert_ne!(tag, etag(7, &other, &[]), "another attribute value");
        let mut moved = base.clone();
        moved.user_id = "u-".into();
        moved.session_id = "1".into();
        assert_ne!(
            tag,
            etag(7, &moved, &[]),
            "fields do not run into each other"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            format!("W/{tag}, \"x\"").parse().expect("ascii"),
        );
        assert!(not_modified(&headers, &tag));
        assert!(!not_modified(&headers, &etag(8, &base, &[])));
        headers.insert(header::IF_NONE_MATCH, "*".parse().expect("ascii"));
        assert!(!not_modified(&headers, &tag), "* asks for the flags");
        // The same version and context, another answer (a schedule's start
        // reached): another tag.
        let answered = |variant: &str| exp_core::evaluate::Assignment {
            experiment_id: "reco_ymal_v1".into(),
            layer: "ymal_ranking".into(),
            variant: variant.into(),
            params: std::sync::Arc::new(Default::default()),
            revision: 3,
            reason: AssignmentReason::Bucketed,
            unit_type: exp_core::UnitType::User,
            holdout_id: None,
        };
        assert_ne!(tag, etag(7, &base, &[answered("treatment")]));
        assert_ne!(
            etag(7, &base, &[answered("control")]),
            etag(7, &base, &[answered("treatment")])
        );
    }
}
