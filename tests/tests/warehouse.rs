//! The Parquet datasets are a warehouse's input: DuckDB, a client no one
//! here wrote, reads the hourly Hive partitions and runs docs/events.md's
//! "add-to-cart rate by variant" SQL verbatim; its answer equals what the
//! simulated traffic put in, and what the service reads back from its own
//! log.
//!
//! DuckDB (pinned below) is used from the environment when importable,
//! else installed with pip into `target/python-deps/duckdb`.

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    time::{Duration, SystemTime},
};

use exp_core::{UnitType, event::Event, metrics::OutcomeType};
use exp_e2e::TestServer;
use exp_ingest::{EventLog, LogOptions};
use exp_proto::v1;

const DUCKDB: &str = "duckdb==2.0.1";

/// The SQL block docs/events.md marks with `<!-- sql: add-to-cart-rate -->`.
fn documented_sql() -> String {
    let events_doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md"))
            .expect("docs/events.md");
    let (_, after) = events_doc
        .split_once("<!-- sql: add-to-cart-rate -->")
        .expect("docs/events.md marks its SQL");
    let (_, block) = after.split_once("```sql\n").expect("a sql block");
    let (sql, _) = block.split_once("```").expect("closed");
    sql.to_owned()
}

/// Per variant: (exposed units, units with an add-to-cart at or after
/// their first exposure).
type Rates = BTreeMap<String, (u64, u64)>;

/// The same metric computed from the events the service holds.
fn rates_of(events: &[Event]) -> Rates {
    let mut first: HashMap<(UnitType, String), (SystemTime, String)> = HashMap::new();
    for event in events {
        if let Event::Exposure(exposure) = event {
            let unit = if exposure.unit_type == UnitType::User {
                exposure.user_id.clone()
            } else {
                exposure.session_id.clone()
            };
            let time = event.timestamp();
            let entry = first
                .entry((exposure.unit_type, unit))
                .or_insert((time, exposure.variant.clone()));
            if time < entry.0 {
                *entry = (time, exposure.variant.clone());
            }
        }
    }
    let mut rates = Rates::new();
    for ((unit_type, unit), (seen, variant)) in &first {
        let converted = events.iter().any(|event| match event {
            Event::Outcome(outcome) => {
                let id = if *unit_type == UnitType::User {
                    &outcome.user_id
                } else {
                    &outcome.session_id
                };
                outcome.outcome_type == OutcomeType::AddToCart
                    && id == unit
                    && event.timestamp() >= *seen
            }
            Event::Exposure(_) => false,
        });
        let entry = rates.entry(variant.clone()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(converted);
    }
    rates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_joins_the_partitions_and_gets_the_add_to_cart_rate_by_variant() {
    let python_path = exp_e2e::python_packages("duckdb", "duckdb", &[DUCKDB]);
    let server = TestServer::start_with(&["--events-flush-interval", "1h"]).await;
    exp_e2e::launch_seed_everywhere(&mut server.admin().await).await;
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    let mut assign =
        v1::assignment_service_client::AssignmentServiceClient::new(server.channel().await);
    let mut events = v1::event_service_client::EventServiceClient::new(server.channel().await);

    let mut truth = Rates::new();
    let mut outcomes = Vec::new();
    let outcome = |id: String, user: &str, session: &str, at: SystemTime| v1::Outcome {
        event_id: id,
        r#type: v1::OutcomeType::AddToCart as i32,
        user_id: user.into(),
        session_id: session.into(),
        placement: "you_may_also_like".into(),
        item_id: "sku-1".into(),
        from_recommendation: true,
        quantity: 1,
        timestamp: Some(at.into()),
        ..Default::default()
    };
    for i in 0..300 {
        // Two in three units are logged-in users, the rest anonymous
        // sessions (bucketed by session id).
        let user = if i % 3 == 2 {
            String::new()
        } else {
            format!("user-{i}")
        };
        let session = format!("session-{i}");
        let answer = assign
            .assign(v1::AssignRequest {
                user_id: user.clone(),
                session_id: session.clone(),
                context: Some(v1::RequestContext {
                    placement: "you_may_also_like".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("assign")
            .into_inner();
        let after = SystemTime::now() + Duration::from_secs(1);
        let converts = i % 4 == 0 || (answer.variant == "treatment" && i % 4 == 1);
        let entry = truth.entry(answer.variant.clone()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(converts);
        if converts {
            outcomes.push(outcome(format!("atc-{i}"), &user, &session, after));
            // A second add-to-cart: the unit still counts once.
            outcomes.push(outcome(format!("atc-{i}-again"), &user, &session, after));
        }
        if i % 5 == 3 {
            // Before the first exposure: not attributable.
            let before = SystemTime::now() - Duration::from_secs(3600);
            outcomes.push(outcome(format!("early-{i}"), &user, &session, before));
        }
    }
    // Someone never exposed.
    outcomes.push(outcome(
        "stranger".into(),
        "user-x",
        "session-x",
        SystemTime::now(),
    ));
    for chunk in outcomes.chunks(100) {
        let answer = events
            .log_outcomes(v1::LogOutcomesRequest {
                outcomes: chunk.to_vec(),
            })
            .await
            .expect("logged")
            .into_inner();
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
    }
    let data = server.stop().await;

    // What the service reads back from its own log and files.
    let log = EventLog::open(LogOptions {
        dir: data.path().join("events"),
        flush_interval: Duration::from_secs(3600),
        max_pending_events: 10_000,
        dedup_window: Duration::from_secs(24 * 3600),
    })
    .expect("open");
    assert!(
        exp_ingest::wal::list(&data.path().join("events").join("wal"))
            .expect("list")
            .is_empty(),
        "shutdown rolled everything"
    );
    let mut cursor = log.cursor();
    let mut held: Vec<Event> = Vec::new();
    loop {
        let events = cursor.read().expect("read");
        if events.is_empty() {
            break;
        }
        held.extend(events);
    }
    assert_eq!(rates_of(&held), truth);
    drop(log);

    let events_dir = data.path().join("events");
    let sql = documented_sql().replace(
        "'data/events/",
        &format!("'{}/", events_dir.to_str().expect("utf-8")),
    );
    let output = Command::new("python3")
        .args([
            "-c",
            "import duckdb, json, sys\n\
             rows = duckdb.sql(sys.stdin.read()).fetchall()\n\
             print(json.dumps([[r[0], r[1], r[2], r[3]] for r in rows]))",
        ])
        .env("PYTHONPATH", python_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(sql.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run duckdb");
    assert!(
        output.status.success(),
        "{}\n{sql}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<(String, u64, u64, f64)> =
        serde_json::from_slice(&output.stdout).expect("json rows");
    let from_duckdb: Rates = rows
        .iter()
        .map(|(variant, exposed, converted, _)| (variant.clone(), (*exposed, *converted)))
        .collect();
    assert_eq!(from_duckdb, truth, "DuckDB over Parquet = the traffic sent");
    assert_eq!(from_duckdb.len(), 2, "both variants got traffic");
    for (variant, exposed, converted, rate) in rows {
        let expected = converted as f64 / exposed as f64;
        assert!((rate - expected).abs() < 1e-12, "{variant}: {rate}");
    }
}
