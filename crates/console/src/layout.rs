//! The page shell (header, navigation, who is signed in), error pages, and
//! how values are written on every page.

use std::time::SystemTime;

use axum::response::{IntoResponse, Response};
use exp_core::{Error, RevisionAction};
use maud::{DOCTYPE, Markup, html};

use crate::session::{CSRF_FIELD, Session};

/// A whole page: `title` and `body` in the shell.
pub fn page(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · expd" }
                link rel="stylesheet" href=(asset("uPlot.min.css"));
                link rel="stylesheet" href=(asset("console.css"));
                script src=(asset("htmx.min.js")) defer {}
                script src=(asset("uPlot.iife.min.js")) defer {}
                script src=(asset("console.js")) defer {}
            }
            body {
                header {
                    nav {
                        a.brand href="/experiments" { "expd" }
                        a href="/experiments" { "Experiments" }
                        a #nav-holdouts href="/holdouts" { "Holdouts" }
                        @if let Some(session) = session {
                            span #signed-in-as {
                                (session.principal.identity) " (" (session.principal.role.name()) ")"
                            }
                            @if session.signed_in {
                                form #sign-out-form method="post" action="/sign-out" {
                                    (csrf(session))
                                    button #sign-out type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// What the browser may do with a console page: run only its own scripts
/// (every script is an embedded asset; the chart's data is JSON, never
/// run), be framed by no one (no click-jacking of the buttons), post forms
/// only here, tell other sites nothing of its addresses, and keep no page
/// (they carry CSRF tokens) in shared caches.
pub async fn protect(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The URL of an embedded asset, with its content's hash so a browser may
/// keep it for a year and still never runs an old one.
pub fn asset(name: &str) -> String {
    format!("/assets/{name}?v={}", crate::assets::version())
}

/// The hidden CSRF field of a form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// The HTTP status of `error` in the one table of error codes.
pub fn status_of(error: &Error) -> axum::http::StatusCode {
    exp_proto::to_http(error).0
}

/// A page saying why a request was refused, with the status of the one
/// error table.
pub fn error_page(session: Option<&Session>, error: &Error) -> Response {
    let status = status_of(error);
    let who = session.map_or("", |session| session.principal.identity.as_str());
    if status.is_server_error() {
        tracing::warn!(%error, who, "console request failed");
    } else {
        tracing::debug!(%error, who, "console request refused");
    }
    let body = html! {
        h1 { "Refused" }
        div #error { (error) }
        p { a href="/experiments" { "Back to the experiments" } }
    };
    (status, page(session, "Refused", body)).into_response()
}

/// The message shown after a change, carried in the redirect's query.
pub fn notice(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message.filter(|message| !message.is_empty()) {
            div #notice { (message) }
        }
    }
}

/// A time as RFC 3339 to the second, UTC.
pub fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A time as RFC 3339, UTC, to the nanosecond when it has a fraction: what
/// a form shows, so saving it unchanged changes nothing.
pub fn exact_time(at: SystemTime) -> String {
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    if nanos == 0 {
        time(at)
    } else {
        humantime::format_rfc3339_nanos(at).to_string()
    }
}

/// An optional time; "—" when unset.
pub fn maybe_time(at: Option<SystemTime>) -> String {
    at.map_or_else(|| "—".to_owned(), time)
}

/// The verb of a revision's action.
pub fn action_name(action: RevisionAction) -> &'static str {
    match action {
        RevisionAction::Create => "create",
        RevisionAction::Update => "update",
        RevisionAction::Start => "start",
        RevisionAction::Pause => "pause",
        RevisionAction::Resume => "resume",
        RevisionAction::Stop => "stop",
        RevisionAction::Complete => "complete",
        RevisionAction::Archive => "archive",
        RevisionAction::Rollback => "rollback",
    }
}

/// A proto enum value's name without its prefix, in lower case:
/// `ATTRIBUTE_OPERATOR_NOT_IN` -> `not_in` (the names the contract and
/// `expctl` files use).
pub fn enum_name<E>(name: Result<&str, E>, prefix: &str) -> String {
    name.map_or_else(
        |_| "unknown".to_owned(),
        |name| name.trim_start_matches(prefix).to_lowercase(),
    )
}

/// A fraction as a percentage with `digits` decimals: 0.0213 -> "2.13%".
pub fn percent(fraction: f64, digits: usize) -> String {
    format!("{:.digits$}%", fraction * 100.0)
}

/// A number to four significant digits, for tables.
pub fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = usize::try_from((3 - magnitude).max(0)).unwrap_or(0);
    format!("{value:.decimals$}")
}

/// A string placed in a URL path segment or query value.
pub fn url_part(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(0.131_234), "0.1312");
        assert_eq!(number(12_345.678), "12346");
        assert_eq!(number(-0.002_71), "-0.002710");
        assert_eq!(number(0.0), "0");
        assert_eq!(percent(0.0213, 2), "2.13%");
    }
}
