//! The holdout use cases on a real sled store: the namespace shared with
//! experiments, the config version and serving config, updates, ending,
//! and reopening the store.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use exp_admin::{Admin, ConfigPublisher, Principal};
use exp_core::{
    Error, Holdout, HoldoutStatus, ManualClock, ParamSchema, examples::seed_experiment,
};
use exp_store::Store;

fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn admin_on(dir: &std::path::Path) -> Admin {
    let store = Arc::new(Store::open(dir).expect("store"));
    Admin::new(
        store,
        Arc::new(ParamSchema::builtin()),
        Arc::new(ManualClock::new(start_time())),
    )
}

fn alice() -> Principal {
    Principal::system("alice@example.com")
}

fn proposed(id: &str) -> Holdout {
    Holdout {
        id: id.into(),
        description: "the ranking layer's 2027".into(),
        share_basis_points: 500,
        salt: "ignored: drawn at creation".into(),
        layers: vec!["ymal_ranking".into()],
        placements: Vec::new(),
        status: HoldoutStatus::Ended,
        revision: 0,
        create_time: SystemTime::UNIX_EPOCH,
        update_time: SystemTime::UNIX_EPOCH,
        updated_by: String::new(),
    }
}

fn field_of(error: &Error) -> Option<&str> {
    match error {
        Error::InvalidArgument(violations) => violations.first().map(|v| v.field.as_str()),
        _ => None,
    }
}

#[test]
fn holdouts_and_experiments_never_share_an_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = admin_on(dir.path());
    admin
        .create(&seed_experiment(), &alice(), "")
        .expect("created");
    let refused = admin
        .create_holdout(&proposed("reco_ymal_v1"), &alice())
        .expect_err("an experiment has the id");
    assert_eq!(field_of(&refused), Some("id"), "{refused}");
    assert!(refused.to_string().contains("experiment"), "{refused}");

    admin
        .create_holdout(&proposed("ranking_holdout"), &alice())
        .expect("created");
    let mut experiment = seed_experiment();
    experiment.id = "ranking_holdout".into();
    let refused = admin
        .create(&experiment, &alice(), "")
        .expect_err("a holdout has the id");
    assert_eq!(field_of(&refused), Some("id"), "{refused}");
    let dry_run = admin
        .validate(exp_core::lifecycle::Update {
            proposed: &experiment,
            mask: &[],
            rerandomize: false,
        })
        .expect("validated");
    assert_eq!(
        dry_run.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
        ["id"],
        "the dry run says what Create would"
    );
    assert!(matches!(
        admin.create_holdout(&proposed("ranking_holdout"), &alice()),
        Err(Error::AlreadyExists {
            kind: "holdout",
            ..
        })
    ));
}

#[tokio::test]
async fn every_holdout_change_bumps_the_config_version_and_reaches_the_serving_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = admin_on(dir.path());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (publisher, task) = ConfigPublisher::start(
        admin.store().clone(),
        admin.clock().clone(),
        shutdown.clone(),
    )
    .expect("publisher");
    tokio::spawn(task);

    let before = admin.store().config_version();
    let created = admin
        .create_holdout(&proposed("ranking_holdout"), &alice())
        .expect("created");
    assert_eq!(created.revision, 1);
    assert_eq!(created.status, HoldoutStatus::Active);
    assert_eq!(created.salt, "ranking_holdout:holdout");
    assert_eq!(created.updated_by, "alice@example.com");
    assert_eq!(admin.store().config_version(), before + 1);
    let config = publisher.refresh().expect("config");
    assert_eq!(config.holdouts.len(), 1);
    assert_eq!(config.holdouts[0].share_basis_points, 500);

    // The share is fixed at creation: changing it is refused, naming it.
    let mut wider = created.clone();
    wider.share_basis_points = 1_000;
    let refused = admin
        .update_holdout(&wider, &["share_basis_points".into()], &alice())
        .expect_err("the share is fixed");
    assert!(
        format!("{refused:?}").contains("share_basis_points"),
        "{refused:?}"
    );
    assert_eq!(
        publisher.refresh().expect("config").holdouts[0].share_basis_points,
        500
    );
    wider.share_basis_points = created.share_basis_points;
    wider.layers.push("ymal_diversity".into());
    wider.description = "not applied: not in the mask".into();
    let updated = admin
        .update_holdout(&wider, &["layers".into()], &alice())
        .expect("updated");
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.layers, wider.layers);
    assert_eq!(updated.description, created.description);
    assert_eq!(updated.salt, created.salt);
    assert_eq!(
        publisher.refresh().expect("config").holdouts[0].layers,
        wider.layers
    );

    let stale = admin
        .end_holdout("ranking_holdout", 1, &alice())
        .expect_err("based on revision 1");
    assert!(matches!(stale, Error::StaleRevision { current: 2, .. }));
    let ended = admin
        .end_holdout("ranking_holdout", 2, &alice())
        .expect("ended");
    assert_eq!(ended.status, HoldoutStatus::Ended);
    assert!(publisher.refresh().expect("config").holdouts.is_empty());
    wider.revision = 0;
    assert!(matches!(
        admin.update_holdout(&wider, &[], &alice()),
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(
        admin
            .holdouts(Some(HoldoutStatus::Active))
            .expect("list")
            .len(),
        0
    );
    assert_eq!(admin.holdouts(None).expect("list"), [ended]);
    shutdown.cancel();
}

#[test]
fn a_mask_naming_a_field_that_cannot_change_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = admin_on(dir.path());
    let created = admin
        .create_holdout(&proposed("ranking_holdout"), &alice())
        .expect("created");
    let refused = admin
        .update_holdout(&created, &["salt".into()], &alice())
        .expect_err("the salt never changes");
    assert_eq!(field_of(&refused), Some("update_mask"));
}

#[test]
fn holdouts_survive_reopening_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let created = {
        let admin = admin_on(dir.path());
        admin
            .create_holdout(&proposed("ranking_holdout"), &alice())
            .expect("created")
    };
    let reopened = admin_on(dir.path());
    assert_eq!(reopened.holdout("ranking_holdout").expect("kept"), created);
}
