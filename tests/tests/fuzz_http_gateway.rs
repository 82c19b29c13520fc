//! Property tests of the HTTP JSON gateway (`POST /experiments/assign` on
//! the HTTP port of a real `expd`): arbitrary bodies (random bytes,
//! random JSON values, and assignment requests with fields mutated,
//! mistyped or huge) are answered without a 5xx, every 4xx with a JSON
//! error naming the field at fault (or `body`), and every answer bounded.
//! Bodies stay under the 2 MB limit: the answer to a larger one is
//! `exp_assign::http`'s own test.
//!
//! `PROPTEST_CASES` sets the number of bodies (256 by default); the
//! property prints how they were answered.

use std::{cell::RefCell, collections::BTreeMap, net::SocketAddr};

use exp_e2e::TestServer;
use exp_proto::status::{
    MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, MAX_VIOLATIONS,
};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest answer the gateway may give: the seed's params and one
/// assignment, or an error of at most 10 bounded violations.
const MAX_ANSWER_BYTES: usize = 8 * 1024;

// === bodies ===

/// A string: plausible, random, with escapes, or huge (up to about 1 MB,
/// under the 2 MB body limit).
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9_-]{0,12}",
        2 => any::<String>(),
        1 => Just("\u{0}\"\\\u{1f}é😀".to_owned()),
        1 => (257usize..2_000).prop_map(|n| "x".repeat(n)),
        1 => (100_000usize..1_000_000).prop_map(|n| "\u{7f}".repeat(n)),
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(string(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A field of the request: left out, of its type, or of any type.
fn field(of_its_type: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        3 => Just(None),
        30 => of_its_type.prop_map(Some),
        1 => json_value().prop_map(Some),
    ]
    .boxed()
}

fn text_field(words: &'static [&'static str]) -> BoxedStrategy<Option<Value>> {
    field(prop_oneof![
        6 => prop::sample::select(words).prop_map(Value::from),
        1 => string().prop_map(Value::String),
    ])
}

fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?)))
            .collect(),
    )
}

/// An assignment request, its fields mutated now and then.
fn request() -> impl Strategy<Value = Value> {
    let attributes = field(prop_oneof![
        8 => prop::collection::btree_map(
            prop_oneof![3 => Just("app_version".to_owned()), 1 => string()],
            prop_oneof![4 => string().prop_map(Value::String), 1 => json_value()],
            0..4,
        )
        .prop_map(|map| Value::Object(map.into_iter().collect())),
        1 => (60usize..120).prop_map(|n| {
            Value::Object((0..n).map(|i| (format!("k{i}"), Value::from("v"))).collect())
        }),
    ]);
    let context = field(
        (
            text_field(&["product_detail", "home"]),
            text_field(&["you_may_also_like", "home_feed"]),
            text_field(&["US", "DE"]),
            text_field(&["mobile", "desktop"]),
            attributes,
            prop::option::weighted(0.1, (string(), json_value())),
        )
            .prop_map(
                |(page_type, placement, country, device, attributes, extra)| {
                    let mut context = object(vec![
                        ("page_type", page_type),
                        ("placement", placement),
                        ("country", country),
                        ("device", device),
                        ("attributes", attributes),
                    ]);
                    if let (Some((name, value)), Value::Object(map)) = (extra, &mut context) {
                        map.insert(name, value);
                    }
                    context
                },
            ),
    );
    (
        text_field(&["u-18224", "u-1"]),
        text_field(&["s-5f1c9a", ""]),
        context,
        field(any::<bool>().prop_map(Value::Bool)),
    )
        .prop_map(|(user_id, session_id, context, defer_exposure)| {
            object(vec![
                ("user_id", user_id),
                ("session_id", session_id),
                ("context", context),
                ("defer_exposure", defer_exposure),
            ])
        })
}

/// A body: random bytes, any JSON value, a request (mutated), a request
/// cut short or with bytes flipped, or nesting past the parser's depth.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let request_bytes = || request().prop_map(|request| request.to_string().into_bytes());
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300),
        2 => json_value().prop_map(|value| value.to_string().into_bytes()),
        10 => request_bytes(),
        2 => (request_bytes(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(mut bytes, at, byte)| {
                let at = at.index(bytes.len());
                if byte % 2 == 0 {
                    bytes.truncate(at);
                } else {
                    bytes[at] ^= byte;
                }
                bytes
            }
        ),
        1 => (1usize..400).prop_map(|depth| {
            let mut bytes = b"{\"context\":".to_vec();
            bytes.extend(std::iter::repeat_n(b'[', depth));
            bytes.extend(std::iter::repeat_n(b']', depth));
            bytes.push(b'}');
            bytes
        }),
    ]
}

// === the gateway ===

/// An HTTP answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// POSTs `body` to `/experiments/assign` over HTTP/1.1.
async fn post(addr: SocketAddr, body: &[u8]) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /experiments/assign HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may answer before reading everything it was sent.
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut raw = Vec::new();
    // A server that answered without reading all of a large body may
    // reset the connection once the answer is out.
    if let Err(err) = reader.read_to_end(&mut raw).await
        && raw.is_empty()
    {
        return Err(format!("read: {err}"));
    }
    drop(sending.await);
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no head in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Fields of the request an error may name (or `body`).
const FIELDS: &[&str] = &["body", "user_id", "session_id", "context", "defer_exposure"];

/// Checks one answer; how it ended.
fn check_answer(answer: &Answer) -> Result<&'static str, TestCaseError> {
    prop_assert!(
        answer.status < 500,
        "a {} answer: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    prop_assert!(
        answer.body.len() <= MAX_ANSWER_BYTES,
        "an answer of {} bytes",
        answer.body.len()
    );
    let json = answer
        .headers
        .iter()
        .any(|(name, value)| name == "content-type" && value.starts_with("application/json"));
    prop_assert!(json, "a {} answer that is not JSON", answer.status);
    let body: Value = serde_json::from_slice(&answer.body).map_err(|err| {
        TestCaseError::fail(format!(
            "a {} answer that does not parse ({err}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ))
    })?;
    if answer.status == 200 {
        let variant = body["variant"].as_str();
        prop_assert!(
            body["variant"].is_null() || matches!(variant, Some("control" | "treatment")),
            "{body}"
        );
        return Ok(if variant.is_some() {
            "200, assigned"
        } else {
            "200, not assigned"
        });
    }
    prop_assert!((400..500).contains(&answer.status), "{}", answer.status);
    let error = &body["error"];
    prop_assert!(error["code"].is_string(), "no error code: {body}");
    let message = error["message"].as_str().unwrap_or_default();
    prop_assert!(
        message.chars().count() <= MAX_MESSAGE_CHARS + 40,
        "{message}"
    );
    if answer.status == 413 {
        // Over the body limit: the size is the problem, no field is.
        prop_assert_eq!(error["code"].as_str(), Some("OUT_OF_RANGE"), "{}", body);
        return Ok("413, too large");
    }
    let violations = error["field_violations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    prop_assert!(
        (1..=MAX_VIOLATIONS).contains(&violations.len()),
        "no field named: {body}"
    );
    for violation in &violations {
        let field = violation["field"].as_str().unwrap_or_default();
        let description = violation["description"].as_str().unwrap_or_default();
        let named = field.split(['.', '[']).next().unwrap_or_default();
        prop_assert!(
            FIELDS.contains(&named),
            "{field:?} is no field of the request"
        );
        prop_assert!(field.chars().count() <= MAX_FIELD_CHARS + 40, "{field}");
        prop_assert!(description.chars().count() <= MAX_DESCRIPTION_CHARS + 40);
    }
    Ok(match answer.status {
        400 => "400, a field named",
        _ => "another 4xx, a field named",
    })
}

#[test]
fn any_body_posted_to_the_gateway_gets_a_bounded_json_answer_and_never_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(async {
        let server = TestServer::start().await;
        exp_e2e::launch_seed_everywhere(&mut server.admin().await).await;
        exp_e2e::wait_until_assign_is_current(server.channel().await).await;
        server
    });
    let addr = server.http_addr;
    let outcomes = RefCell::new(BTreeMap::<&str, u32>::new());
    let mut runner = TestRunner::new(Config {
        source_file: Some(file!()),
        // Beside this file: a tests/ file has no src/ to mirror.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    let result = runner.run(&body(), |body| {
        let answer = runtime
            .block_on(post(addr, &body))
            .map_err(TestCaseError::fail)?;
        let outcome = check_answer(&answer)?;
        *outcomes.borrow_mut().entry(outcome).or_default() += 1;
        Ok(())
    });
    runtime.block_on(async { drop(server.stop().await) });
    if let Err(failure) = result {
        panic!("http_gateway_bodies: {failure}");
    }
    let outcomes = outcomes.into_inner();
    let described: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    println!(
        "property http_gateway_bodies: {} cases ({})",
        outcomes.values().sum::<u32>(),
        described.join(", ")
    );
}
