//! The `expctl` binary against a real `expd`: an experiment's whole life
//! from a YAML file, errors that name the field, the results table, and
//! the one-command demo.

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

#[test]
fn the_demo_shows_results_and_a_guardrail_stopping_the_harmful_experiment() {
    let output = Command::new(env!("CARGO_BIN_EXE_expctl"))
        .args(["demo", "--users", "8000"])
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
    assert!(stdout.contains("reco_ymal_v1 (revision"), "{stdout}");
    assert!(stdout.contains("sample ratio"), "{stdout}");
    assert!(stdout.contains("reco_ymal_v1 is still running"), "{stdout}");
}
