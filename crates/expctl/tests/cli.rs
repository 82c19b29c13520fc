//! The `expctl` binary against a real `expd`: an experiment's whole life
//! from a YAML file, a holdout's, errors that name the field, the results
//! table, and the one-command demo.

use std::process::{Command, Output};

use exp_e2e::TestServer;

fn expctl(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_expctl"))
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .expect("expctl runs")
}

/// Runs `expctl`, asserting success, and returns its standard output.
fn ok(addr: &str, args: &[&str]) -> String {
    let output = expctl(addr, args);
    assert!(
        output.status.success(),
        "expctl {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Runs `expctl`, asserting failure, and returns its standard error.
fn refused(addr: &str, args: &[&str]) -> String {
    let output = expctl(addr, args);
    assert!(!output.status.success(), "expctl {args:?} should fail");
    String::from_utf8(output.stderr).expect("utf-8")
}

const EXPERIMENT_YAML: &str = r#"
id: ymal_ctl
name: YMAL from a file
description: You-may-also-like ranked by model v3
hypothesis: Re-ranking by style raises add-to-cart rate
owner: reco-team@example.com
layer: ymal_ranking
variants:
  - name: control
    weight: 50
    params: {model_version: v2}
  - name: treatment
    weight: 50
    params: {model_version: v3, rerank_weight_style: 0.6}
control_variant: control
traffic_percent: 10
eligibility:
  placements: [you_may_also_like]
metrics:
  primary_metric: add_to_cart_rate
  guardrails:
    - {metric: bounce_rate, threshold: 0.05, action: GUARDRAIL_ACTION_PAUSE}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_lives_its_whole_life_through_expctl() {
    let server = TestServer::start().await;
    let addr = format!("http://{}", server.grpc_addr);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ymal.yaml");
    std::fs::write(&file, EXPERIMENT_YAML).expect("write");
    let file = file.to_str().expect("utf-8 path").to_owned();

    let addr_for = addr.clone();
    let run = move |args: Vec<String>| {
        let addr = addr_for.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(&addr, &args)
        })
    };
    let args = |text: &str| -> Vec<String> { text.split_whitespace().map(String::from).collect() };

    let created = run(vec!["create".into(), "-f".into(), file.clone()])
        .await
        .expect("create");
    assert!(
        created.contains("ymal_ctl revision 1: draft, traffic 10%"),
        "{created}"
    );
    let shown = run(args("show ymal_ctl")).await.expect("show");
    assert!(shown.contains("traffic_percent: 10"), "{shown}");
    assert!(shown.contains("rerank_weight_style: 0.6"), "{shown}");

    let started = run(args("start ymal_ctl --reason launch"))
        .await
        .expect("start");
    assert!(started.contains("running"), "{started}");
    let ramped = run(args("ramp ymal_ctl 50")).await.expect("ramp");
    assert!(ramped.contains("traffic 50%"), "{ramped}");
    let listed = run(args("list --status running")).await.expect("list");
    assert!(
        listed.contains("ymal_ctl") && listed.contains("50%"),
        "{listed}"
    );
    assert!(
        run(args("pause ymal_ctl"))
            .await
            .expect("pause")
            .contains("paused")
    );
    assert!(
        run(args("resume ymal_ctl"))
            .await
            .expect("resume")
            .contains("running")
    );

    let set = run(args(
        "override set ymal_ctl --unit qa-1 --variant treatment --expires-in 2h",
    ))
    .await
    .expect("override set");
    assert!(set.contains("qa-1 -> treatment"), "{set}");
    let overrides = run(args("override list ymal_ctl"))
        .await
        .expect("override list");
    assert!(overrides.contains("unit_id: qa-1"), "{overrides}");
    run(args("override delete ymal_ctl --unit qa-1"))
        .await
        .expect("override delete");
    let overrides = run(args("override list ymal_ctl"))
        .await
        .expect("override list");
    assert!(!overrides.contains("qa-1"), "{overrides}");

    let rolled = run(args("rollback ymal_ctl 2")).await.expect("rollback");
    assert!(rolled.contains("traffic 10%"), "{rolled}");
    let revisions = run(args("revisions ymal_ctl")).await.expect("revisions");
    assert!(revisions.contains("rollback"), "{revisions}");
    assert!(revisions.contains("launch"), "{revisions}");

    // The file has no revision: an update needs --force to apply it over
    // the current one.
    let updated = run(vec![
        "update".into(),
        "-f".into(),
        file.clone(),
        "--force".into(),
    ])
    .await
    .expect("update");
    assert!(updated.contains("ymal_ctl"), "{updated}");

    let results = run(args("results ymal_ctl")).await.expect("results");
    assert!(results.contains("ymal_ctl (revision"), "{results}");
    assert!(results.contains("add_to_cart_rate"), "{results}");

    let stopped = run(args("stop ymal_ctl --reason done --ship treatment"))
        .await
        .expect("stop");
    assert!(stopped.contains("stopped"), "{stopped}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_field_and_exit_non_zero() {
    let server = TestServer::start().await;
    let addr = format!("http://{}", server.grpc_addr);
    let dir = tempfile::tempdir().expect("temp dir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "id: x\ntrafic_percent: 5\n").expect("write");
    let invalid = dir.path().join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"id": "bad_weights", "name": "n", "owner": "o", "control_variant": "a",
            "variants": [{"name": "a", "weight": 60}, {"name": "b", "weight": 60}]}"#,
    )
    .expect("write");
    let no_revision = dir.path().join("no_revision.yaml");
    std::fs::write(&no_revision, "id: x\nname: y\n").expect("write");
    let typo_free = no_revision.to_str().expect("path").to_owned();
    let (typo, invalid) = (
        typo.to_str().expect("path").to_owned(),
        invalid.to_str().expect("path").to_owned(),
    );
    let errors = tokio::task::spawn_blocking(move || {
        (
            refused(&addr, &["create", "-f", &typo]),
            refused(&addr, &["create", "-f", &invalid]),
            refused(&addr, &["results", "no_such_experiment"]),
            refused(&addr, &["update", "-f", &typo_free]),
        )
    })
    .await
    .expect("expctl");
    assert!(errors.0.contains("trafic_percent"), "{}", errors.0);
    assert!(errors.1.contains("InvalidArgument"), "{}", errors.1);
    assert!(errors.1.contains("variants"), "{}", errors.1);
    assert!(errors.2.contains("NotFound"), "{}", errors.2);
    assert!(errors.3.contains("--force"), "{}", errors.3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holdout_is_created_shown_updated_and_ended_through_expctl() {
    let server = TestServer::start().await;
    let addr = format!("http://{}", server.grpc_addr);
    let outputs = tokio::task::spawn_blocking(move || {
        let created = ok(
            &addr,
            &[
                "holdout",
                "create",
                "ranking_holdout",
                "--share-basis-points",
                "500",
                "--layer",
                "ymal_ranking",
            ],
        );
        let shown = ok(&addr, &["holdout", "show", "ranking_holdout"]);
        let updated = ok(
            &addr,
            &[
                "holdout",
                "update",
                "ranking_holdout",
                "--layer",
                "ymal_ranking",
                "--layer",
                "ymal_diversity",
            ],
        );
        let ended = ok(&addr, &["holdout", "end", "ranking_holdout"]);
        let listed = ok(&addr, &["holdout", "list", "--status", "ended"]);
        let no_scope = refused(
            &addr,
            &[
                "holdout",
                "create",
                "empty_holdout",
                "--share-basis-points",
                "500",
            ],
        );
        (created, shown, updated, ended, listed, no_scope)
    })
    .await
    .expect("expctl");
    let (created, shown, updated, ended, listed, no_scope) = outputs;
    assert!(
        created.contains("ranking_holdout revision 1: active, 500 basis points"),
        "{created}"
    );
    assert!(shown.contains("salt: ranking_holdout:holdout"), "{shown}");
    assert!(
        updated.contains("revision 2: active, 500 basis points"),
        "{updated}"
    );
    assert!(ended.contains("revision 3: ended"), "{ended}");
    assert!(
        listed.contains("ranking_holdout revision 3: ended"),
        "{listed}"
    );
    assert!(no_scope.contains("holdout.layers"), "{no_scope}");
    server.stop().await;
}

/// One metric row of a printed results table.
#[derive(Debug, Clone, PartialEq)]
struct PrintedMetric {
    metric: String,
    variant: String,
    value: String,
    /// The absolute difference's interval, for treatments.
    interval: Option<(f64, f64)>,
}

/// Units per variant and the metric rows of the results table of
/// `experiment` in the demo's output.
fn printed_results(stdout: &str, experiment: &str) -> (Vec<(String, u64)>, Vec<PrintedMetric>) {
    let start = stdout
        .find(&format!("\n{experiment} (revision"))
        .unwrap_or_else(|| panic!("no results table of {experiment}:\n{stdout}"));
    let table = &stdout[start + 1..];
    let table = &table[..table.find("(* significant").expect("the table's footnote")];
    let mut units = Vec::new();
    let mut metrics = Vec::new();
    let mut metric = String::new();
    for line in table.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 3 && words[2] == "units" {
            units.push((
                words[0].to_owned(),
                words[1].replace(',', "").parse().expect("units"),
            ));
            continue;
        }
        if words.is_empty() || words[0] == "metric" || words[0] == "counted" {
            continue;
        }
        // The metric's name and role are printed on its first row only.
        let rest = if words.len() >= 3 && ["primary", "secondary", "guardrail"].contains(&words[1])
        {
            metric = words[0].to_owned();
            &words[2..]
        } else {
            &words[..]
        };
        let interval = rest.get(3).and_then(|lower| {
            let lower = lower.strip_prefix('[')?.strip_suffix(',')?.parse().ok()?;
            let upper = rest.get(4)?.strip_suffix(']')?.parse().ok()?;
            Some((lower, upper))
        });
        metrics.push(PrintedMetric {
            metric: metric.clone(),
            variant: rest[0].to_owned(),
            value: rest[1].to_owned(),
            interval,
        });
    }
    (units, metrics)
}

/// Per (experiment, variant): units, add-to-cart rate, conversion rate and
/// revenue per unit, recounted by DuckDB from the demo's Parquet files
/// (each unit in the variant of its earliest exposure; outcomes at or
/// after it).
fn recount(events: &std::path::Path) -> Vec<(String, String, u64, f64, f64, f64)> {
    let dir = events.to_str().expect("utf-8");
    let sql = format!(
        r#"
WITH first_exposure AS (
  SELECT experiment_id, unit_type,
         CASE unit_type WHEN 'user' THEN user_id ELSE session_id END AS unit_id,
         arg_min(variant, "timestamp") AS variant, min("timestamp") AS first_seen
  FROM read_parquet('{dir}/exposures/*/*/*.parquet', hive_partitioning = true)
  GROUP BY ALL
),
per_unit AS (
  SELECT f.experiment_id, f.variant, f.unit_type, f.unit_id,
         count(*) FILTER (WHERE o.type = 'add_to_cart') AS carts,
         count(*) FILTER (WHERE o.type = 'purchase') AS purchases,
         coalesce(sum(o.value) FILTER (WHERE o.type = 'purchase'), 0) AS revenue
  FROM first_exposure f
  LEFT JOIN read_parquet('{dir}/outcomes/*/*/*.parquet', hive_partitioning = true) o
    ON o."timestamp" >= f.first_seen
   AND f.unit_id = CASE f.unit_type WHEN 'user' THEN o.user_id ELSE o.session_id END
  GROUP BY ALL
)
SELECT experiment_id, variant, count(*) AS units,
       avg(CASE WHEN carts > 0 THEN 1.0 ELSE 0.0 END),
       avg(CASE WHEN purchases > 0 THEN 1.0 ELSE 0.0 END),
       avg(revenue)
FROM per_unit GROUP BY ALL ORDER BY ALL
"#
    );
    let python_path = exp_e2e::python_packages("duckdb", "duckdb", &["duckdb==2.0.1"]);
    let output = Command::new("python3")
        .args([
            "-c",
            "import duckdb, json, sys\n\
             print(json.dumps(duckdb.sql(sys.argv[1]).fetchall()))",
            &sql,
        ])
        .env("PYTHONPATH", python_path)
        .output()
        .expect("run duckdb");
    assert!(
        output.status.success(),
        "{}\n{sql}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json rows")
}

#[test]
fn the_demo_prints_what_its_own_parquet_files_hold_and_a_guardrail_stopping_the_harmful_experiment()
{
    let data = tempfile::tempdir().expect("dir");
    let output = Command::new(env!("CARGO_BIN_EXE_expctl"))
        .args(["demo", "--users", "8000", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("expctl demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("GUARDRAIL: home_pool_v1 stopped by \"guardrail\""),
        "{stdout}"
    );
    assert!(stdout.contains("bounce_rate"), "{stdout}");
    assert!(
        stdout.contains("Assign on home_feed now answers no experiment"),
        "{stdout}"
    );
    assert!(stdout.contains("sample ratio"), "{stdout}");
    assert!(stdout.contains("reco_ymal_v1 is still running"), "{stdout}");

    let recounted = recount(&data.path().join("events"));
    let mut compared = 0;
    for experiment in ["reco_ymal_v1", "home_pool_v1"] {
        let (units, metrics) = printed_results(&stdout, experiment);
        let rows: Vec<_> = recounted.iter().filter(|row| row.0 == experiment).collect();
        assert_eq!(
            units,
            rows.iter()
                .map(|row| (row.1.clone(), row.2))
                .collect::<Vec<_>>(),
            "{experiment}: printed units against DuckDB's\n{stdout}"
        );
        for row in rows {
            let recounted = [
                ("add_to_cart_rate", row.3),
                ("conversion_rate", row.4),
                ("revenue_per_session", row.5),
            ];
            for (metric, value) in recounted {
                let Some(printed) = metrics
                    .iter()
                    .find(|printed| printed.metric == metric && printed.variant == row.1)
                else {
                    continue;
                };
                assert_eq!(
                    printed.value,
                    format!("{value:.4}"),
                    "{experiment} {metric} of {}\n{stdout}",
                    row.1
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 8, "only {compared} printed values recounted");
    // The demo's true add-to-cart lift (10% -> 12.5%) is in the interval.
    let (_, ymal) = printed_results(&stdout, "reco_ymal_v1");
    let lift = ymal
        .iter()
        .find(|row| row.metric == "add_to_cart_rate" && row.variant == "treatment")
        .and_then(|row| row.interval)
        .expect("the treatment's interval");
    assert!(
        lift.0 <= 0.025 && 0.025 <= lift.1,
        "{lift:?} misses +0.025\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_units_and_days_an_experiment_needs() {
    let server = TestServer::start().await;
    let addr = format!("http://{}", server.grpc_addr);
    // expctl blocks: off the runtime that serves it.
    let (printed, refused, unseen) = tokio::task::spawn_blocking(move || {
        let printed = ok(
            &addr,
            &[
                "plan",
                "--rate",
                "0.1",
                "--mde",
                "0.05",
                "--traffic",
                "20",
                "--daily-units",
                "100000",
            ],
        );
        (
            printed,
            expctl(&addr, &["plan", "--rate", "1.5", "--mde", "0.05"]),
            refused(
                &addr,
                &[
                    "plan",
                    "--rate",
                    "0.1",
                    "--mde",
                    "0.05",
                    "--placement",
                    "nowhere",
                ],
            ),
        )
    })
    .await
    .expect("expctl ran");
    assert!(printed.contains("control units        56512"), "{printed}");
    assert!(printed.contains("eligible units       565120"), "{printed}");
    assert!(printed.contains("days                 5.7"), "{printed}");
    assert!(
        printed.contains("at units a day       100000 (given)"),
        "{printed}"
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("baseline_rate"), "{message}");
    // Before launch, the days from a placement: one never exposed on is
    // refused, naming the flag's field.
    assert!(
        unseen.contains("placement") && unseen.contains("no exposures"),
        "{unseen}"
    );
}
