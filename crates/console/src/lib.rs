//! The console: pages on `expd`'s HTTP port where PMs create, launch,
//! monitor and roll back experiments, and analysts read results. Pages are
//! rendered on the server (maud templates, compiled with the binary); the
//! browser gets HTML, a stylesheet, htmx for partial updates and uPlot for
//! the charts, all embedded: nothing is fetched from elsewhere.
//!
//! Every page calls the same use cases as the gRPC services ([`Admin`],
//! [`Results`]): one implementation of every rule, and the same words.
//!
//! # Layout
//!
//! - [`session`]: who is asking. With a tokens file, a sign-in page takes a
//!   viewer or editor token and keeps it in an `HttpOnly`, `SameSite=Strict`
//!   cookie; every form carries a CSRF token (an HMAC of the session); a
//!   change needs an editor, whose identity becomes the revision's author.
//! - [`layout`]: the page shell, messages, and how values are written.
//! - [`list`]: every experiment, with filters and health badges.
//! - [`experiment`]: one experiment, its status moves, its history with a
//!   field-by-field diff, and rollback with a preview.
//! - [`edit`]: the create and edit form (inputs from the parameter schema),
//!   its YAML pane in `expctl`'s file format, validation by field path, and
//!   stale edits explained.
//! - [`overrides`]: QA overrides.
//! - [`results`]: the metric table with intervals, the sanity checks and
//!   guardrails, lift over time with its band, and the minimum detectable
//!   effect.
//! - [`diff`]: two experiments compared field by field.
//! - [`holdouts`]: every holdout, and one holdout's definition with the
//!   comparison of its groups (holdout against rest) on the results page's
//!   own rendering; ending it.
//! - [`assets`]: the embedded stylesheet, script and vendored libraries.

pub mod assets;
pub mod diff;
pub mod edit;
pub mod experiment;
pub mod holdouts;
pub mod layout;
pub mod list;
pub mod overrides;
pub mod results;
pub mod session;

use std::sync::Arc;

use axum::{
    Router,
    response::Redirect,
    routing::{get, post},
};
use exp_admin::{Admin, Authenticator};
use exp_core::Error;
use exp_results::Results;

/// What every page handler shares.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    admin: Admin,
    results: Option<Results>,
    auth: Authenticator,
    csrf: session::CsrfKey,
    any_host: bool,
}

impl Console {
    /// A console over `admin` (and `results`, when this process has them),
    /// with callers checked by `auth`. Without tokens, it answers only
    /// requests addressed to a loopback name unless `any_host`
    /// (`--allow-insecure-remote`): a page of another site whose name a
    /// DNS answer points at 127.0.0.1 would otherwise be this console's
    /// own origin to the browser, and could read its forms.
    pub fn new(
        admin: Admin,
        results: Option<Results>,
        auth: Authenticator,
        any_host: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                admin,
                results,
                auth,
                csrf: session::CsrfKey::generate(),
                any_host,
            }),
        }
    }

    fn admin(&self) -> &Admin {
        &self.inner.admin
    }

    fn results(&self) -> Option<&Results> {
        self.inner.results.as_ref()
    }

    /// Runs a use case off the async workers (the store's writes wait for
    /// the disk).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Admin) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let admin = self.inner.admin.clone();
        tokio::task::spawn_blocking(move || work(&admin))
            .await
            .map_err(|error| Error::Unavailable(format!("the request's task failed: {error}")))?
    }

    /// A redirect to `path` that shows `notice` there. The notice is
    /// signed: a link someone else made cannot put words in the console's
    /// mouth.
    fn redirect_with_notice(&self, path: &str, notice: &str) -> axum::response::Response {
        use axum::response::IntoResponse;
        let signature = self.inner.csrf.token(&format!("notice:{notice}"));
        Redirect::to(&format!(
            "{path}?notice={}&sig={signature}",
            layout::url_part(notice)
        ))
        .into_response()
    }

    /// The notice of a page's query, if its signature holds.
    fn notice_of(&self, uri: &axum::http::Uri) -> Option<String> {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
        let field = |name: &str| {
            query
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.as_str())
        };
        let notice = field("notice")?;
        self.inner
            .csrf
            .verify(&format!("notice:{notice}"), field("sig")?)
            .then(|| notice.to_owned())
    }

    /// The console's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(|| async { Redirect::to("/experiments") }))
            .route(
                "/sign-in",
                get(session::sign_in_page).post(session::sign_in),
            )
            .route("/sign-out", post(session::sign_out))
            .route("/assets/{file}", get(assets::serve))
            .route("/experiments", get(list::page))
            .route("/experiments/new", get(edit::new_page).post(edit::create))
            .route("/experiments/{id}", get(experiment::page))
            .route(
                "/experiments/{id}/edit",
                get(edit::edit_page).post(edit::update),
            )
            .route(
                "/experiments/{id}/rollback/{revision}",
                get(experiment::rollback_preview).post(experiment::rollback),
            )
            .route(
                "/experiments/{id}/overrides",
                get(overrides::page).post(overrides::add),
            )
            .route(
                "/experiments/{id}/overrides/delete",
                post(overrides::delete),
            )
            .route("/experiments/{id}/results", get(results::page))
            .route("/experiments/{id}/{action}", post(experiment::act))
            .route("/holdouts", get(holdouts::list_page))
            .route("/holdouts/{id}", get(holdouts::page))
            .route("/holdouts/{id}/results", get(holdouts::results_page))
            .route("/holdouts/{id}/end", post(holdouts::end))
            .layer(axum::middleware::map_response(layout::protect))
            .with_state(self)
    }
}
