//! The console's rules of access, over real HTTP against a real `expd`:
//! a sign-in keeps a viewer's or editor's token in an `HttpOnly`,
//! `SameSite=Strict` cookie and refuses data-plane tokens; a change needs
//! the form's CSRF token, this origin and an editor, whose identity is the
//! revision's author; the pages fetch nothing from elsewhere. (The pages
//! themselves are driven in a real browser by `tests/console/`.)

use std::net::SocketAddr;

use exp_e2e::{
    DATA_PLANE_TOKEN, HttpAnswer, TestServer, http_request, seed_experiment, with_token,
    write_tokens_file,
};
use exp_proto::v1;

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> HttpAnswer {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    http_request(addr, method, path, &all, &body).await
}

/// Signs in with `token`; the cookie header to send afterwards.
async fn sign_in(addr: SocketAddr, token: &str) -> String {
    let answer = send(addr, "POST", "/sign-in", &[], &[("token", token)]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let cookie = answer.header("set-cookie").expect("a cookie is set");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// The CSRF token in a page's forms.
fn csrf_of(page: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let at = page
        .find(marker)
        .expect("the page has a form with a CSRF token")
        + marker.len();
    page[at..].split('"').next().expect("value").to_owned()
}

async fn guarded() -> (TestServer, tempfile::TempDir, &'static str, &'static str) {
    let tokens_dir = tempfile::tempdir().expect("dir");
    let (tokens_file, editor, viewer) = write_tokens_file(tokens_dir.path());
    let server = TestServer::start_with(&["--tokens-file", &tokens_file]).await;
    server
        .admin()
        .await
        .create_experiment(with_token(
            v1::CreateExperimentRequest {
                experiment: Some(seed_experiment()),
                reason: String::new(),
            },
            editor,
        ))
        .await
        .expect("created");
    (server, tokens_dir, editor, viewer)
}

/// A server without tokens holding the seed as a draft.
async fn with_seed_draft() -> TestServer {
    let server = TestServer::start().await;
    server
        .admin()
        .await
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(seed_experiment()),
            reason: String::new(),
        })
        .await
        .expect("created");
    server
}

async fn current(server: &TestServer, token: &str) -> v1::Experiment {
    server
        .admin()
        .await
        .get_experiment(with_token(
            v1::GetExperimentRequest {
                id: "reco_ymal_v1".into(),
            },
            token,
        ))
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment")
}

#[tokio::test]
async fn signing_in_keeps_a_people_token_in_an_http_only_same_site_strict_cookie() {
    let (server, _tokens, editor, _viewer) = guarded().await;
    let addr = server.http_addr;

    let anonymous = send(addr, "GET", "/experiments", &[], &[]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/sign-in"));

    let answer = send(addr, "POST", "/sign-in", &[], &[("token", editor)]).await;
    assert_eq!(answer.status, 303);
    let cookie = answer.header("set-cookie").expect("cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(editor),
        "the token is not kept in clear: {cookie}"
    );

    let cookie = sign_in(addr, editor).await;
    let page = send(addr, "GET", "/experiments", &[("Cookie", &cookie)], &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("alice@example.com (editor)"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"data-experiment="reco_ymal_v1""#));

    let data_plane = send(
        addr,
        "POST",
        "/sign-in",
        &[],
        &[("token", DATA_PLANE_TOKEN)],
    )
    .await;
    assert_eq!(data_plane.status, 403, "{}", data_plane.body);
    assert!(data_plane.header("set-cookie").is_none());
    let unknown = send(
        addr,
        "POST",
        "/sign-in",
        &[],
        &[("token", "not-a-token-at-all")],
    )
    .await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.header("set-cookie").is_none());
    let forged_cookie = send(
        addr,
        "GET",
        "/experiments",
        &[("Cookie", "expd_token=6e6f7065")],
        &[],
    )
    .await;
    assert_eq!(
        forged_cookie.status, 303,
        "an unknown token signs nobody in"
    );
}

#[tokio::test]
async fn a_change_needs_the_forms_csrf_token_this_origin_and_an_editor_who_is_its_author() {
    let (server, _tokens, editor, viewer) = guarded().await;
    let addr = server.http_addr;
    let path = "/experiments/reco_ymal_v1";

    let viewer_cookie = sign_in(addr, viewer).await;
    let viewer_page = send(addr, "GET", path, &[("Cookie", &viewer_cookie)], &[]).await;
    assert_eq!(viewer_page.status, 200);
    assert!(
        !viewer_page.body.contains("data-action="),
        "a viewer sees no moves"
    );
    // The viewer's own CSRF token (of the sign-out form) does not make it
    // an editor.
    let viewer_csrf = csrf_of(&viewer_page.body);
    let refused = send(
        addr,
        "POST",
        &format!("{path}/start"),
        &[("Cookie", &viewer_cookie)],
        &[
            ("csrf", &viewer_csrf),
            ("reason", "go"),
            ("expected_revision", "1"),
        ],
    )
    .await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("viewer"), "{}", refused.body);

    let cookie = sign_in(addr, editor).await;
    let page = send(addr, "GET", path, &[("Cookie", &cookie)], &[]).await;
    assert!(
        page.body.contains(r#"data-action="start""#),
        "an editor may start a draft"
    );
    let csrf = csrf_of(&page.body);
    let start = |csrf: String, origin: Option<&'static str>| {
        let cookie = cookie.clone();
        async move {
            let mut headers = vec![("Cookie", cookie.as_str())];
            if let Some(origin) = origin {
                headers.push(("Origin", origin));
            }
            send(
                addr,
                "POST",
                "/experiments/reco_ymal_v1/start",
                &headers,
                &[
                    ("csrf", &csrf),
                    ("reason", "launch"),
                    ("expected_revision", "1"),
                ],
            )
            .await
        }
    };
    assert_eq!(
        start(String::new(), None).await.status,
        403,
        "no CSRF token"
    );
    assert_eq!(
        start("0".repeat(64), None).await.status,
        403,
        "a wrong CSRF token"
    );
    assert_eq!(
        start(viewer_csrf.clone(), None).await.status,
        403,
        "another session's CSRF token"
    );
    assert_eq!(
        start(csrf.clone(), Some("https://evil.example"))
            .await
            .status,
        403,
        "another origin"
    );
    let untouched = current(&server, editor).await;
    assert_eq!(untouched.revision, 1, "nothing refused was written");

    let started = start(csrf, None).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let now = current(&server, editor).await;
    assert_eq!(now.revision, 2);
    assert_eq!(now.status, v1::ExperimentStatus::Running as i32);
    assert_eq!(
        now.updated_by, "alice@example.com",
        "the editor is the author"
    );
}

#[tokio::test]
async fn the_pages_fetch_nothing_from_elsewhere_and_their_assets_are_embedded() {
    let server = with_seed_draft().await;
    let addr = server.http_addr;
    for path in [
        "/experiments",
        "/experiments/new",
        "/experiments/reco_ymal_v1",
        "/experiments/reco_ymal_v1/edit",
        "/experiments/reco_ymal_v1/overrides",
    ] {
        let page = send(addr, "GET", path, &[], &[]).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        for attribute in ["src=\"", "href=\""] {
            for (at, _) in page.body.match_indices(attribute) {
                let target = &page.body[at + attribute.len()..];
                assert!(
                    target.starts_with('/') || target.starts_with('#'),
                    "{path} links outside the console: {}",
                    &target[..target.len().min(60)]
                );
            }
        }
    }
    for (asset, content_type) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
        ("htmx.min.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
    ] {
        let answer = send(addr, "GET", &format!("/assets/{asset}"), &[], &[]).await;
        assert_eq!(answer.status, 200, "{asset}");
        assert!(
            answer
                .header("content-type")
                .is_some_and(|value| value.starts_with(content_type)),
            "{asset}: {:?}",
            answer.header("content-type")
        );
        assert!(answer.body.len() > 1_000, "{asset} has its content");
    }
    assert_eq!(
        send(addr, "GET", "/assets/secrets.txt", &[], &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn pages_forbid_framing_and_foreign_scripts_and_answer_only_loopback_names_without_tokens() {
    let server = TestServer::start().await;
    let addr = server.http_addr;
    let page = send(addr, "GET", "/experiments", &[], &[]).await;
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-store"));

    // A page of another site whose name now resolves to 127.0.0.1 (DNS
    // rebinding) is refused: without tokens, only loopback names answer.
    let rebound = http_request(
        addr,
        "GET",
        "/experiments",
        &[("Host", "attacker.example:8080")],
        "",
    )
    .await;
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    let by_name = http_request(addr, "GET", "/experiments", &[("Host", "localhost")], "").await;
    assert_eq!(by_name.status, 200);
}

#[tokio::test]
async fn a_notice_someone_else_wrote_into_a_link_is_not_shown() {
    let server = with_seed_draft().await;
    let addr = server.http_addr;
    let page = send(addr, "GET", "/experiments/reco_ymal_v1", &[], &[]).await;
    let csrf = csrf_of(&page.body);
    let started = send(
        addr,
        "POST",
        "/experiments/reco_ymal_v1/start",
        &[],
        &[
            ("csrf", &csrf),
            ("reason", "launch"),
            ("expected_revision", "1"),
        ],
    )
    .await;
    assert_eq!(started.status, 303);
    let back = started.header("location").expect("a redirect").to_owned();
    let shown = send(addr, "GET", &back, &[], &[]).await;
    assert!(
        shown.body.contains(r#"id="notice""#),
        "the console's own notice shows"
    );
    let forged = send(
        addr,
        "GET",
        "/experiments/reco_ymal_v1?notice=Session+expired%3A+paste+your+token+at+evil.example&sig=00",
        &[],
        &[],
    )
    .await;
    assert_eq!(forged.status, 200);
    assert!(
        !forged.body.contains("evil.example"),
        "a forged notice is not shown"
    );
}
