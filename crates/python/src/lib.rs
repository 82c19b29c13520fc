//! `expd_client`: the Python package of the experiment service, a binding
//! of the Rust SDK (`exp-client`), so Python assigns with the very code
//! `expd` runs.
//!
//! - [`Client`]: follows `WatchConfigs` on a background Rust thread (the
//!   SDK's follower: reconnection with backoff, the snapshot file), assigns
//!   locally with the GIL released, and sends the exposures of its
//!   assignments and the outcomes Python logs through the SDK's event
//!   sender (bounded queue, batches, retries; `close()` flushes).
//! - [`Snapshot`]: a serving config given as JSON, evaluated the same way
//!   (the published vectors of `crates/core/testdata` go through it).
//! - [`bucket`]: the bucketing hash itself.
//! - Errors are Python exceptions under `ExpdError`; a bad input raises
//!   `InvalidRequest` whose `field` names it.
//!
//! The type stubs are `expd_client.pyi` beside this crate's
//! `pyproject.toml`.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use exp_client::{
    ClientError, ClientOptions, EventSender, EventSenderOptions, events::SenderStats,
};
use exp_core::{
    Error, FieldViolation,
    evaluate::{AssignmentReason, CompiledSnapshot, Evaluation, RequestContext},
    serving::ServingConfig,
};
use exp_proto::v1;
use pyo3::{
    create_exception,
    exceptions::PyException,
    prelude::*,
    types::{PyBool, PyDict, PyFloat, PyList, PyString},
};
use serde_json::Value;

create_exception!(
    expd_client,
    ExpdError,
    PyException,
    "Every error of expd_client."
);
create_exception!(
    expd_client,
    InvalidRequest,
    ExpdError,
    "A bad input; `field` names it (e.g. `user_id`, `context.placement`)."
);
create_exception!(
    expd_client,
    NoConfig,
    ExpdError,
    "No experiment config yet: the service has not answered and no snapshot file was saved."
);
create_exception!(
    expd_client,
    ConfigTimeout,
    ExpdError,
    "`wait_for_config` gave up."
);
create_exception!(
    expd_client,
    QueueFull,
    ExpdError,
    "The event queue is full (the service has been unreachable a while); the event was not queued."
);

/// `InvalidRequest` naming `field`.
fn invalid(py: Python<'_>, field: &str, description: &str) -> PyErr {
    let error = InvalidRequest::new_err(format!("{field}: {description}"));
    // The attribute is the point of the exception; setting it cannot fail
    // on a fresh exception object.
    let _ = error.value(py).setattr("field", field);
    error
}

fn from_error(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::InvalidArgument(violations) => {
            let first = violations
                .first()
                .cloned()
                .unwrap_or_else(|| FieldViolation::new("request", "is invalid".to_owned()));
            invalid(py, &first.field, &first.description)
        }
        other => ExpdError::new_err(other.to_string()),
    }
}

fn from_client_error(py: Python<'_>, error: ClientError) -> PyErr {
    match error {
        ClientError::NoConfig => NoConfig::new_err(error.to_string()),
        ClientError::Timeout(_) => ConfigTimeout::new_err(error.to_string()),
        ClientError::InvalidRequest(error) => from_error(py, error),
        ClientError::Options(message) => {
            let (field, description) = message
                .split_once(": ")
                .unwrap_or(("options", message.as_str()));
            // The SDK says `endpoint "URL": ...`; Python's argument is `address`.
            let field = field.strip_prefix("endpoint ").map_or(field, |_| "address");
            invalid(py, field, description)
        }
        other => ExpdError::new_err(other.to_string()),
    }
}

/// A JSON value as the Python object it reads as: numbers stay numbers
/// (whole ones `int`), objects become `dict`s.
fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
        Value::Number(number) => match number.as_i64() {
            Some(whole) => whole.into_pyobject(py)?.into_any(),
            None => PyFloat::new(py, number.as_f64().unwrap_or(f64::NAN)).into_any(),
        },
        Value::String(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let items: Vec<Bound<'py, PyAny>> = items
                .iter()
                .map(|item| to_python(py, item))
                .collect::<PyResult<_>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(fields) => dict_of(py, fields)?.into_any(),
    })
}

fn dict_of<'py>(
    py: Python<'py>,
    fields: &serde_json::Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in fields {
        dict.set_item(key, to_python(py, value)?)?;
    }
    Ok(dict)
}

/// One experiment's answer.
#[derive(Debug)]
#[pyclass(frozen, module = "expd_client")]
pub struct Assignment {
    /// The experiment, e.g. "reco_ymal_v1".
    #[pyo3(get)]
    experiment_id: String,
    /// The variant, e.g. "treatment".
    #[pyo3(get)]
    variant: String,
    /// The variant's parameters.
    #[pyo3(get)]
    params: Py<PyDict>,
    /// The experiment's layer.
    #[pyo3(get)]
    layer: String,
    /// The experiment revision evaluated.
    #[pyo3(get)]
    revision: u64,
    /// "bucketed", "override" (QA), "shipped" or "holdout" (the unit is
    /// held out: no experiment, `holdout_id` names the holdout).
    #[pyo3(get)]
    reason: &'static str,
    /// "user" or "session": which id decided it.
    #[pyo3(get)]
    unit_type: &'static str,
    /// For reason "holdout", the holdout; else None.
    #[pyo3(get)]
    holdout_id: Option<String>,
}

#[pymethods]
impl Assignment {
    fn __repr__(&self) -> String {
        format!(
            "Assignment(experiment_id={:?}, variant={:?}, reason={:?})",
            self.experiment_id, self.variant, self.reason
        )
    }
}

/// The answer to one request.
#[derive(Debug)]
#[pyclass(frozen, module = "expd_client")]
pub struct Answer {
    /// Every assignment, in (layer, experiment id) order.
    #[pyo3(get)]
    assignments: Py<PyList>,
    /// The parameters to use: every assignment's, merged.
    #[pyo3(get)]
    params: Py<PyDict>,
    /// The config version evaluated.
    #[pyo3(get)]
    config_version: u64,
    /// "user" when the request had a user id, else "session".
    #[pyo3(get)]
    unit_type: &'static str,
    /// Every holdout whose scope the request fell in, as dicts of
    /// `holdout_id`, `group` ("holdout" or "rest"), `revision` and
    /// `unit_type`: what a caller deferring exposures logs for each.
    #[pyo3(get)]
    holdouts: Py<PyList>,
}

#[pymethods]
impl Answer {
    /// The first assignment of an experiment (a holdout is none), or
    /// None: the seed's `experiment_id` and `variant`.
    #[getter]
    fn primary<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        for assignment in self.assignments.bind(py).iter() {
            if assignment.cast::<Assignment>()?.get().holdout_id.is_none() {
                return Ok(Some(assignment));
            }
        }
        Ok(None)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Answer(config_version={}, assignments={})",
            self.config_version,
            self.assignments.bind(py).len()
        )
    }
}

fn answer_of(py: Python<'_>, evaluation: &Evaluation) -> PyResult<Answer> {
    let assignments: Vec<Bound<'_, Assignment>> = evaluation
        .assignments
        .iter()
        .map(|assignment| {
            Bound::new(
                py,
                Assignment {
                    experiment_id: assignment.experiment_id.to_string(),
                    variant: assignment.variant.to_string(),
                    params: dict_of(py, &assignment.params)?.unbind(),
                    layer: assignment.layer.to_string(),
                    revision: assignment.revision,
                    reason: assignment.reason.as_str(),
                    unit_type: assignment.unit_type.as_str(),
                    holdout_id: assignment.holdout_id.as_deref().map(str::to_owned),
                },
            )
        })
        .collect::<PyResult<_>>()?;
    let holdouts = evaluation
        .holdouts
        .iter()
        .map(|membership| {
            let group = PyDict::new(py);
            group.set_item("holdout_id", membership.holdout_id.as_ref())?;
            group.set_item("group", membership.group())?;
            group.set_item("revision", membership.revision)?;
            group.set_item("unit_type", membership.unit_type.as_str())?;
            Ok(group)
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Answer {
        assignments: PyList::new(py, assignments)?.unbind(),
        params: dict_of(py, &evaluation.params())?.unbind(),
        config_version: evaluation.config_version,
        unit_type: evaluation.unit_type.as_str(),
        holdouts: PyList::new(py, holdouts)?.unbind(),
    })
}

/// A request's context from keyword arguments.
fn context_of(
    placement: &str,
    page_type: &str,
    country: &str,
    device: &str,
    attributes: Option<HashMap<String, String>>,
) -> RequestContext {
    RequestContext {
        placement: placement.to_owned(),
        page_type: page_type.to_owned(),
        country: country.to_owned(),
        device: device.to_owned(),
        attributes: attributes.unwrap_or_default(),
    }
}

/// A time from seconds since the Unix epoch.
fn time_of(py: Python<'_>, field: &str, seconds: f64) -> PyResult<SystemTime> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|since| SystemTime::UNIX_EPOCH.checked_add(since))
        .ok_or_else(|| {
            invalid(
                py,
                field,
                "must be seconds since the Unix epoch, 0 or more, within what a clock holds",
            )
        })
}

/// The SipHash bucket (0 to 9,999) of `unit_id` under `salt`: the hash
/// every implementation of assignment must agree on.
#[pyfunction]
fn bucket(salt: &str, unit_id: &str) -> u32 {
    exp_core::bucketing::bucket(salt, unit_id)
}

/// A serving config (expd's JSON form of it, as in
/// `crates/core/testdata/assignments.json`), compiled for evaluation.
#[derive(Debug)]
#[pyclass(frozen, module = "expd_client")]
pub struct Snapshot {
    compiled: CompiledSnapshot,
}

#[pymethods]
impl Snapshot {
    /// Compiles the serving config in `text` (JSON).
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Self> {
        let config: ServingConfig = serde_json::from_str(text)
            .map_err(|error| invalid(py, "config", &error.to_string()))?;
        Ok(Self {
            compiled: CompiledSnapshot::compile(&config),
        })
    }

    /// Assigns a request at `now` (seconds since the Unix epoch; None:
    /// now), as `Client.assign` does.
    #[pyo3(signature = (user_id=None, session_id=None, *, placement="", page_type="", country="", device="", attributes=None, now=None))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        py: Python<'_>,
        user_id: Option<&str>,
        session_id: Option<&str>,
        placement: &str,
        page_type: &str,
        country: &str,
        device: &str,
        attributes: Option<HashMap<String, String>>,
        now: Option<f64>,
    ) -> PyResult<Answer> {
        let now = match now {
            Some(seconds) => time_of(py, "now", seconds)?,
            None => SystemTime::now(),
        };
        let context = context_of(placement, page_type, country, device, attributes);
        let evaluation = self
            .compiled
            .evaluate(
                user_id.unwrap_or(""),
                session_id.unwrap_or(""),
                &context,
                now,
            )
            .map_err(|error| from_error(py, error))?;
        answer_of(py, &evaluation)
    }
}

/// The experiment service's client: follows the config of an `expd`,
/// assigns locally, and sends events in the background.
#[derive(Debug)]
#[pyclass(frozen, module = "expd_client")]
pub struct Client {
    // Declared first: dropped before the runtime its tasks run on.
    client: exp_client::Client,
    // Shared out of the lock for each use: no call holds it across a wait,
    // so a `flush` waiting on an unreachable service blocks no other thread.
    events: Mutex<Option<Arc<EventSender>>>,
    log_exposures: bool,
    runtime: Arc<tokio::runtime::Runtime>,
}

#[pymethods]
impl Client {
    /// Starts following `address` (e.g. "http://127.0.0.1:50051"). With
    /// `snapshot_path`, the last config is kept in that file and used at
    /// start while the service is unreachable. `token`: a data-plane token
    /// when the service has a tokens file. `placements`: only experiments
    /// of these (None: all). `log_exposures`: send the exposure of every
    /// bucketed assignment (unless `assign(defer_exposure=True)`).
    #[new]
    #[pyo3(signature = (address, *, token=None, snapshot_path=None, placements=None, log_exposures=true, client_id="expd-client-python"))]
    fn new(
        py: Python<'_>,
        address: &str,
        token: Option<String>,
        snapshot_path: Option<PathBuf>,
        placements: Option<Vec<String>>,
        log_exposures: bool,
        client_id: &str,
    ) -> PyResult<Self> {
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(invalid(
                py,
                "address",
                &format!("{address:?} is not a URL: write it as http://HOST:PORT"),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("expd-client")
            .enable_all()
            .build()
            .map_err(|error| {
                ExpdError::new_err(format!("starting the client's thread: {error}"))
            })?;
        let _inside = runtime.enter();
        let client = exp_client::Client::start(ClientOptions {
            endpoint: address.to_owned(),
            placements: placements.unwrap_or_default(),
            client_id: client_id.to_owned(),
            snapshot_path,
            token: token.clone(),
            ..ClientOptions::default()
        })
        .map_err(|error| from_client_error(py, error))?;
        let events = EventSender::start(EventSenderOptions {
            endpoint: address.to_owned(),
            token,
            ..EventSenderOptions::default()
        })
        .map_err(|error| from_client_error(py, error))?;
        drop(_inside);
        Ok(Self {
            client,
            events: Mutex::new(Some(Arc::new(events))),
            log_exposures,
            runtime: Arc::new(runtime),
        })
    }

    /// Waits (releasing the GIL) until a config is in use; returns its
    /// version. Raises `ConfigTimeout` after `timeout` seconds.
    #[pyo3(signature = (timeout=10.0))]
    fn wait_for_config(&self, py: Python<'_>, timeout: f64) -> PyResult<u64> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| invalid(py, "timeout", "must be seconds, 0 or more"))?;
        py.detach(|| self.runtime.block_on(self.client.wait_for_config(timeout)))
            .map_err(|error| from_client_error(py, error))
    }

    /// Waits until the config in use is version `version` or later.
    #[pyo3(signature = (version, timeout=10.0))]
    fn wait_for_version(&self, py: Python<'_>, version: u64, timeout: f64) -> PyResult<u64> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| invalid(py, "timeout", "must be seconds, 0 or more"))?;
        py.detach(|| {
            self.runtime
                .block_on(self.client.wait_for_version(version, timeout))
        })
        .map_err(|error| from_client_error(py, error))
    }

    /// The config version in use; None before any.
    #[getter]
    fn config_version(&self) -> Option<u64> {
        self.client.config_version()
    }

    /// Assigns a request locally (no I/O; the GIL is released while it
    /// evaluates): the same answer as `Assign` on the same config version.
    /// A user id, a session id, or both; the unit is the user when there
    /// is one. Logs the exposure of each bucketed assignment unless
    /// `defer_exposure` (or the client was made with `log_exposures=False`).
    #[pyo3(signature = (user_id=None, session_id=None, *, placement="", page_type="", country="", device="", attributes=None, defer_exposure=false))]
    #[allow(clippy::too_many_arguments)]
    fn assign(
        &self,
        py: Python<'_>,
        user_id: Option<&str>,
        session_id: Option<&str>,
        placement: &str,
        page_type: &str,
        country: &str,
        device: &str,
        attributes: Option<HashMap<String, String>>,
        defer_exposure: bool,
    ) -> PyResult<Answer> {
        let (user_id, session_id) = (user_id.unwrap_or(""), session_id.unwrap_or(""));
        let context = context_of(placement, page_type, country, device, attributes);
        let evaluated = py.detach(|| {
            let now = SystemTime::now();
            let evaluation = self.client.assign_at(user_id, session_id, &context, now)?;
            if self.log_exposures && !defer_exposure {
                self.expose(&evaluation, user_id, session_id, &context, now);
            }
            Ok(evaluation)
        });
        let evaluation = evaluated.map_err(|error| from_client_error(py, error))?;
        answer_of(py, &evaluation)
    }

    /// Queues an outcome (`type`: "impression", "click", "add_to_cart",
    /// "purchase", "page_view", "page_load") for the background sender.
    /// `timestamp`: seconds since the Unix epoch (None: now); `event_id`:
    /// None gives a unique one. Raises `QueueFull` when the queue is full.
    #[pyo3(signature = (r#type, *, user_id=None, session_id=None, placement="", page_type="", item_id="", item_ids=None, from_recommendation=false, source_placement="", value=0.0, currency="", quantity=0, latency_ms=0.0, event_id=None, timestamp=None))]
    #[allow(clippy::too_many_arguments)]
    fn log_outcome(
        &self,
        py: Python<'_>,
        r#type: &str,
        user_id: Option<String>,
        session_id: Option<String>,
        placement: &str,
        page_type: &str,
        item_id: &str,
        item_ids: Option<Vec<String>>,
        from_recommendation: bool,
        source_placement: &str,
        value: f64,
        currency: &str,
        quantity: u32,
        latency_ms: f64,
        event_id: Option<String>,
        timestamp: Option<f64>,
    ) -> PyResult<()> {
        let outcome_type = v1::OutcomeType::from_str_name(&format!(
            "OUTCOME_TYPE_{}",
            r#type.to_ascii_uppercase()
        ))
        .filter(|kind| *kind != v1::OutcomeType::Unspecified)
        .ok_or_else(|| {
            invalid(
                py,
                "type",
                &format!(
                    "{type:?} is not an outcome type: impression, click, add_to_cart, purchase, \
                     page_view or page_load",
                    type = r#type
                ),
            )
        })?;
        let (user_id, session_id) = (user_id.unwrap_or_default(), session_id.unwrap_or_default());
        if user_id.is_empty() && session_id.is_empty() {
            return Err(invalid(
                py,
                "user_id",
                "a user id or a session id is required",
            ));
        }
        let timestamp = timestamp
            .map(|seconds| time_of(py, "timestamp", seconds))
            .transpose()?
            .map(prost_types::Timestamp::from);
        let outcome = v1::Outcome {
            event_id: event_id.unwrap_or_default(),
            r#type: outcome_type as i32,
            user_id,
            session_id,
            placement: placement.to_owned(),
            page_type: page_type.to_owned(),
            item_id: item_id.to_owned(),
            item_ids: item_ids.unwrap_or_default(),
            from_recommendation,
            source_placement: source_placement.to_owned(),
            value,
            currency: currency.to_owned(),
            quantity,
            latency_ms,
            timestamp,
            ..v1::Outcome::default()
        };
        self.with_sender(|sender| sender.log_outcome(outcome))?
            .map_err(|full| QueueFull::new_err(full.to_string()))
    }

    /// Events queued, sent, refused and dropped so far.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        use std::sync::atomic::Ordering::Relaxed;
        let dict = PyDict::new(py);
        self.with_sender(|sender| {
            let stats = sender.stats();
            [
                ("queued", stats.queued.load(Relaxed)),
                ("accepted", stats.accepted.load(Relaxed)),
                ("duplicates", stats.duplicates.load(Relaxed)),
                ("rejected", stats.rejected.load(Relaxed)),
                ("retries", stats.retries.load(Relaxed)),
                ("dropped", stats.dropped.load(Relaxed)),
            ]
        })?
        .into_iter()
        .try_for_each(|(name, count)| dict.set_item(name, count))?;
        Ok(dict)
    }

    /// Sends what is queued now and waits (up to `timeout` seconds) for
    /// the answers; False when the time ran out first (the events stay
    /// queued and are retried).
    #[pyo3(signature = (timeout=10.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| invalid(py, "timeout", "must be seconds, 0 or more"))?;
        let sender = self.sender()?;
        Ok(py.detach(|| {
            // The timer is made inside the runtime, which drives it.
            self.runtime
                .block_on(async { tokio::time::timeout(timeout, sender.flush()).await })
                .is_ok()
        }))
    }

    /// Sends everything queued (waiting up to `timeout` seconds) and stops
    /// sending; assignment keeps working. Returns the final counters.
    #[pyo3(signature = (timeout=10.0))]
    fn close<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyDict>> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|_| invalid(py, "timeout", "must be seconds, 0 or more"))?;
        let sender = self.events.lock().unwrap_or_else(|p| p.into_inner()).take();
        let dict = PyDict::new(py);
        if let Some(sender) = sender
            && let Some(stats) = py.detach(|| self.finish(sender, timeout))
        {
            use std::sync::atomic::Ordering::Relaxed;
            dict.set_item("accepted", stats.accepted.load(Relaxed))?;
            dict.set_item("dropped", stats.dropped.load(Relaxed))?;
            dict.set_item("rejected", stats.rejected.load(Relaxed))?;
        }
        Ok(dict)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.close(py, 10.0).map(|_| ())
    }
}

/// A client dropped without `close()` still sends what it queued (up to
/// five seconds, other Python threads running meanwhile): losing exposures
/// silently would bias results.
impl Drop for Client {
    fn drop(&mut self) {
        let sender = self
            .events
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(sender) = sender else {
            return;
        };
        // Not while the interpreter shuts down: then there is nobody to
        // run, and the send happens with the interpreter held.
        let mut pending = Some(sender);
        let mut finish = || {
            if let Some(sender) = pending.take() {
                self.finish(sender, DROP_FLUSH);
            }
        };
        if Python::try_attach(|py| py.detach(&mut finish)).is_none() {
            finish();
        }
    }
}

/// Longest a dropped client waits to send what it queued.
const DROP_FLUSH: Duration = Duration::from_secs(5);

impl Client {
    /// Queues the exposure of each bucketed assignment (overrides and
    /// shipped variants measure nothing) and of the unit's group in each
    /// holdout whose scope the request fell in; a full queue drops it
    /// (counted by the sender) rather than fail the assignment.
    fn expose(
        &self,
        evaluation: &Evaluation,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
        now: SystemTime,
    ) {
        let Ok(sender) = self.sender() else {
            return;
        };
        for assignment in &evaluation.assignments {
            if assignment.reason != AssignmentReason::Bucketed {
                continue;
            }
            let _ = sender.log_exposure(v1::Exposure {
                event_id: String::new(),
                experiment_id: assignment.experiment_id.to_string(),
                variant: assignment.variant.to_string(),
                user_id: user_id.to_owned(),
                session_id: session_id.to_owned(),
                unit_type: exp_proto::convert::unit_type_to_proto(assignment.unit_type) as i32,
                placement: context.placement.clone(),
                page_type: context.page_type.clone(),
                revision: assignment.revision,
                timestamp: Some(now.into()),
            });
        }
        for membership in &evaluation.holdouts {
            let _ = sender.log_exposure(v1::Exposure {
                event_id: String::new(),
                experiment_id: membership.holdout_id.to_string(),
                variant: membership.group().to_owned(),
                user_id: user_id.to_owned(),
                session_id: session_id.to_owned(),
                unit_type: exp_proto::convert::unit_type_to_proto(membership.unit_type) as i32,
                placement: context.placement.clone(),
                page_type: context.page_type.clone(),
                revision: membership.revision,
                timestamp: Some(now.into()),
            });
        }
    }

    fn with_sender<T>(&self, work: impl FnOnce(&EventSender) -> T) -> PyResult<T> {
        Ok(work(self.sender()?.as_ref()))
    }

    /// The event sender, shared out of the lock.
    fn sender(&self) -> PyResult<Arc<EventSender>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| ExpdError::new_err("the client is closed: events are no longer sent"))
    }

    /// Sends what `sender` holds and stops it, within `timeout`. A flush
    /// still running on another thread holds a share of it: then this
    /// waits for what is queued and leaves the stop to the last share.
    fn finish(&self, sender: Arc<EventSender>, timeout: Duration) -> Option<Arc<SenderStats>> {
        match Arc::try_unwrap(sender) {
            Ok(sender) => Some(self.runtime.block_on(sender.close(timeout))),
            Err(shared) => {
                let _ = self
                    .runtime
                    .block_on(async { tokio::time::timeout(timeout, shared.flush()).await });
                None
            }
        }
    }
}

/// The module.
#[pymodule]
fn expd_client(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<Client>()?;
    module.add_class::<Answer>()?;
    module.add_class::<Assignment>()?;
    module.add_class::<Snapshot>()?;
    module.add_function(wrap_pyfunction!(bucket, module)?)?;
    module.add("ExpdError", py.get_type::<ExpdError>())?;
    module.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    module.add("NoConfig", py.get_type::<NoConfig>())?;
    module.add("ConfigTimeout", py.get_type::<ConfigTimeout>())?;
    module.add("QueueFull", py.get_type::<QueueFull>())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
