//! Who is asking, and whether they may change anything.
//!
//! - With a tokens file, the sign-in page takes a `viewer` or `editor`
//!   token (the same tokens as the gRPC admin) and keeps it in the
//!   [`TOKEN_COOKIE`] cookie: `HttpOnly` (no script reads it) and
//!   `SameSite=Strict` (no other site's page sends it). Every page checks
//!   it again, against the tokens read at start.
//! - Without one, everyone is the editor "anonymous", as on the gRPC port
//!   (and `expd` then listens on loopback only, unless
//!   `--allow-insecure-remote`); the console then also answers only
//!   requests addressed to a loopback name (no DNS rebinding).
//! - Every form carries a CSRF token: an HMAC-SHA256 of the session (the
//!   token, or "anonymous") under a key drawn when the process starts. A
//!   change also needs an editor and, when the browser names the page's
//!   origin, this host's.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, State},
    http::{HeaderMap, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use exp_admin::{Access, Principal, Role};
use exp_core::Error;
use hmac::{Hmac, KeyInit, Mac};
use maud::html;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Console, layout};

/// The cookie that keeps a signed-in token (hex-encoded: a token may hold
/// characters a cookie cannot).
pub const TOKEN_COOKIE: &str = "expd_token";

/// The form field every POST carries its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

/// The key CSRF tokens are signed with, drawn at start.
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("CsrfKey(..)")
    }
}

impl CsrfKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0; 32];
        getrandom::fill(&mut key).expect("the operating system gives random bytes");
        Self(key)
    }

    /// The CSRF token of `session`.
    pub fn token(&self, session: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(session.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `offered` is `session`'s CSRF token (constant time).
    pub fn verify(&self, session: &str, offered: &str) -> bool {
        bool::from(self.token(session).as_bytes().ct_eq(offered.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A caller of the console.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who they are; their identity is the author of what they change.
    pub principal: Principal,
    /// The CSRF token their forms carry.
    pub csrf: String,
    /// Whether tokens are checked (a sign-out button makes sense).
    pub signed_in: bool,
    session_key: String,
    same_origin: bool,
}

impl Session {
    /// Whether they may change anything (an editor).
    pub fn may_change(&self) -> bool {
        self.principal.role.may(Access::Change)
    }

    /// The page refusing a viewer a page that only serves to change
    /// something (the create and edit forms); `None` for an editor.
    pub fn editor_only(&self) -> Option<Response> {
        (!self.may_change()).then(|| {
            layout::error_page(
                Some(self),
                &Error::PermissionDenied(format!(
                    "{} has the {} role: only an editor may create or edit experiments",
                    self.principal.identity,
                    self.principal.role.name()
                )),
            )
        })
    }

    /// Checks a form posted to change something: the CSRF token, the
    /// origin and the role. `Some` is the refusal's page.
    fn refusal(&self, console: &Console, form: &Form) -> Option<Response> {
        let offered = form.get(CSRF_FIELD);
        if !self.same_origin || !console.inner.csrf.verify(&self.session_key, offered) {
            return Some(layout::error_page(
                Some(self),
                &Error::PermissionDenied(
                    "this form did not come from this console (its CSRF token or origin does \
                     not match): reload the page and try again"
                        .into(),
                ),
            ));
        }
        if !self.may_change() {
            return Some(layout::error_page(
                Some(self),
                &Error::PermissionDenied(format!(
                    "{} has the {} role: only an editor may change experiments",
                    self.principal.identity,
                    self.principal.role.name()
                )),
            ));
        }
        None
    }
}

/// The request's `Origin`, when sent, is this host (`Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(origin), Some(host)) if origin == host)
}

/// Whether the request names a loopback host (`Host`, any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

/// The token kept in the request's cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .and_then(|(_, value)| unhex(value))
}

impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let auth = &console.inner.auth;
        let same_origin = same_origin(&parts.headers) || parts.method == Method::GET;
        if !auth.is_enforcing() && !console.inner.any_host && !loopback_host(&parts.headers) {
            return Err(layout::error_page(
                None,
                &Error::PermissionDenied(
                    "without a tokens file this console answers only to a loopback address \
                     (127.0.0.1, localhost, [::1]): open it by one of those"
                        .into(),
                ),
            ));
        }
        if !auth.is_enforcing() {
            let principal = auth
                .authorize_header(None, Access::Read, "the console")
                .map_err(|error| layout::error_page(None, &error))?;
            return Ok(Self::new(
                console,
                principal,
                "anonymous".into(),
                false,
                same_origin,
            ));
        }
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(Redirect::to("/sign-in").into_response());
        };
        match auth.authorize_header(
            Some(&format!("Bearer {token}")),
            Access::Read,
            "the console",
        ) {
            Ok(principal) => Ok(Self::new(console, principal, token, true, same_origin)),
            Err(Error::Unauthenticated(_)) => Err(Redirect::to("/sign-in").into_response()),
            Err(error) => Err(layout::error_page(None, &error)),
        }
    }
}

impl Session {
    fn new(
        console: &Console,
        principal: Principal,
        session_key: String,
        signed_in: bool,
        same_origin: bool,
    ) -> Self {
        Self {
            csrf: console.inner.csrf.token(&session_key),
            principal,
            signed_in,
            session_key,
            same_origin,
        }
    }

    /// A session of `identity` in `role` for render tests, with a fixed
    /// CSRF token.
    #[cfg(test)]
    pub(crate) fn for_test(identity: &str, role: Role) -> Self {
        Self {
            principal: Principal {
                identity: identity.to_owned(),
                role,
            },
            csrf: "test-csrf-token".to_owned(),
            signed_in: true,
            session_key: "test-session".to_owned(),
            same_origin: true,
        }
    }
}

/// A form posted to change something, already checked: its CSRF token,
/// its origin and an editor's session. A handler that takes it cannot
/// forget the check; a refusal is the page saying why.
#[derive(Debug)]
pub struct Change {
    /// Who is changing.
    pub session: Session,
    /// What they posted.
    pub form: Form,
}

impl axum::extract::FromRequest<Console> for Change {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        console: &Console,
    ) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, console).await?;
        let form =
            Form::from_request(axum::extract::Request::from_parts(parts, body), console).await?;
        match session.refusal(console, &form) {
            Some(refused) => Err(refused),
            None => Ok(Self { session, form }),
        }
    }
}

/// A posted form: its fields in order (a name may repeat).
#[derive(Debug, Clone, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(body)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// A form of these fields.
    pub fn from_fields(fields: Vec<(String, String)>) -> Self {
        Self(fields)
    }

    /// Whether the form has a field `name` (even empty).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(field, _)| field == name)
    }

    /// Sets `name` to `value`, replacing its first value or adding it.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(field, _)| field == name) {
            Some((_, old)) => *old = value.to_owned(),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map_or("", |(_, value)| value.trim())
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.0
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self::parse(&body))
    }
}

/// `GET /sign-in`.
pub async fn sign_in_page(State(console): State<Console>) -> Response {
    sign_in_form(&console, None, StatusCode::OK)
}

fn sign_in_form(console: &Console, error: Option<&str>, status: StatusCode) -> Response {
    let enforcing = console.inner.auth.is_enforcing();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(error) = error {
            div #error { (error) }
        }
        @if enforcing {
            p { "Paste your token: a viewer token reads, an editor token also changes experiments. \
                 It is kept in a cookie this browser sends only to this console." }
            form #sign-in-form method="post" action="/sign-in" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required;
                button #sign-in type="submit" { "Sign in" }
            }
        } @else {
            p { "This expd has no tokens file: everyone who reaches it is the editor \"anonymous\"." }
            a href="/experiments" { "Open the experiments" }
        }
    };
    (status, layout::page(None, "Sign in", body)).into_response()
}

/// `POST /sign-in`: keeps a valid viewer or editor token in the cookie.
pub async fn sign_in(State(console): State<Console>, headers: HeaderMap, form: Form) -> Response {
    if !same_origin(&headers) {
        let refused = Error::PermissionDenied("this sign-in did not come from this console".into());
        return sign_in_form(
            &console,
            Some(&refused.to_string()),
            layout::status_of(&refused),
        );
    }
    let token = form.get("token");
    let checked = console.inner.auth.authorize_header(
        Some(&format!("Bearer {token}")),
        Access::Read,
        "the console",
    );
    match checked {
        Ok(principal) if principal.role != Role::DataPlane => {
            let cookie = format!(
                "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                hex(token.as_bytes())
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/experiments")).into_response()
        }
        Ok(_) | Err(Error::PermissionDenied(_)) => sign_in_form(
            &console,
            Some("that is a data-plane token: the console needs a viewer or editor token"),
            StatusCode::FORBIDDEN,
        ),
        Err(_) => sign_in_form(&console, Some("unknown token"), StatusCode::UNAUTHORIZED),
    }
}

/// `POST /sign-out`: forgets the cookie.
pub async fn sign_out(State(console): State<Console>, session: Session, form: Form) -> Response {
    if !session.same_origin
        || !console
            .inner
            .csrf
            .verify(&session.session_key, form.get(CSRF_FIELD))
    {
        return layout::error_page(
            Some(&session),
            &Error::PermissionDenied("this form did not come from this console".into()),
        );
    }
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_verifies_for_its_session_only() {
        let key = CsrfKey::generate();
        let token = key.token("pm-7d9f2c41e8a64b0f");
        assert_eq!(token.len(), 64);
        assert!(key.verify("pm-7d9f2c41e8a64b0f", &token));
        assert!(!key.verify("an-3b1e9d7c5a2f4e60", &token));
        assert!(!key.verify("pm-7d9f2c41e8a64b0f", ""));
        assert!(!CsrfKey::generate().verify("pm-7d9f2c41e8a64b0f", &token));
    }

    #[test]
    fn a_cookie_token_round_trips_through_hex_whatever_its_characters() {
        let token = "a;b=c,\"d\\e~0123456789";
        let mut headers = HeaderMap::new();
        let value = format!("other=1; {TOKEN_COOKIE}={}; last=2", hex(token.as_bytes()));
        headers.insert(header::COOKIE, value.parse().expect("ascii"));
        assert_eq!(cookie_token(&headers).as_deref(), Some(token));
        headers.insert(
            header::COOKIE,
            format!("{TOKEN_COOKIE}=zz").parse().expect("ascii"),
        );
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, value.parse().expect("ascii"));
            loopback_host(&headers)
        };
        assert!(host("127.0.0.1:8080"));
        assert!(host("localhost:8080"));
        assert!(host("localhost"));
        assert!(host("[::1]:8080"));
        assert!(!host("attacker.example:8080"), "a rebound name");
        assert!(!host("127.0.0.1.attacker.example"));
        assert!(!host("10.0.0.7:8080"));
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn a_post_from_another_origin_is_not_same_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().expect("ascii"));
        assert!(
            same_origin(&headers),
            "no Origin: a same-origin form or a tool"
        );
        headers.insert(
            header::ORIGIN,
            "http://127.0.0.1:8080".parse().expect("ascii"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            "https://evil.example".parse().expect("ascii"),
        );
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "null".parse().expect("ascii"));
        assert!(!same_origin(&headers));
    }
}
