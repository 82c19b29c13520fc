//! An assign replica (`expd --services assign --config-source <admin>`)
//! restarted while its admin is down keeps the exposures of the `Assign`
//! answers it gave: they wait in its spool (`<data-dir>/spool/exposures`)
//! and reach the admin's event log once it is back, each exactly once.
//!
//! Two ways the replica stops: SIGTERM (it writes what it could not send
//! to the spool), and SIGKILL once the spool holds the exposures (during
//! an outage the sender spools what it holds every flush interval; what
//! it took in the last moments before a kill is not promised).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod common;

use common::{Expd, wait_until};
use exp_client::events::{Batch, read_spool};
use exp_core::event::{Event, EventKind};
use exp_ingest::parquet;
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient,
    results_service_client::ResultsServiceClient,
};

/// Users assigned while the admin is up, while it is down, and by the
/// restarted replica before the admin is back.
const BEFORE_OUTAGE: usize = 200;
const DURING_OUTAGE: usize = 500;
const AFTER_RESTART: usize = 100;

/// Every (user, experiment) a replica assigned, with its variant.
#[derive(Debug, Default)]
struct Assigned(BTreeMap<(String, String), String>);

impl Assigned {
    /// Assigns `user` on `replica`; `false` when it has no config yet.
    async fn assign(
        &mut self,
        replica: &mut AssignmentServiceClient<tonic::transport::Channel>,
        user: &str,
    ) -> bool {
        let answer = replica
            .assign(v1::AssignRequest {
                user_id: user.into(),
                context: Some(v1::RequestContext {
                    placement: "you_may_also_like".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let Ok(answer) = answer else { return false };
        let assignments = answer.into_inner().assignments;
        for assignment in &assignments {
            self.0.insert(
                (user.to_owned(), assignment.experiment_id.clone()),
                assignment.variant.clone(),
            );
        }
        !assignments.is_empty()
    }

    fn users(&self) -> BTreeSet<&str> {
        self.0.keys().map(|(user, _)| user.as_str()).collect()
    }
}

async fn create_and_start_seed_experiment(admin: &Expd) {
    let mut client = AdminServiceClient::new(admin.channel().await);
    let mut seed = exp_proto::convert::experiment_to_proto(&exp_core::examples::seed_experiment());
    seed.traffic_percent = 100;
    client
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(seed),
            reason: String::new(),
        })
        .await
        .expect("create");
    client
        .start_experiment(v1::StartExperimentRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("start");
}

/// Units the admin's results have counted as exposed, once it answers.
async fn exposed_units(admin: &Expd) -> Option<u64> {
    let answer = ResultsServiceClient::new(admin.channel().await)
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .ok()?;
    Some(
        answer
            .into_inner()
            .variants
            .iter()
            .map(|variant| variant.exposed_units)
            .sum(),
    )
}

/// Users whose exposures the spool holds.
fn spooled_users(spool: &Path) -> BTreeSet<String> {
    read_spool(spool)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|batch| match batch {
            Batch::Exposures(request) => Some(request.exposures),
            Batch::Outcomes(_) => None,
        })
        .flatten()
        .map(|exposure| exposure.user_id)
        .collect()
}

fn spool_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// How many exposures of each (user, experiment, variant) the admin's
/// Parquet files hold, after a graceful stop rolled every one of them.
fn written_exposures(admin_dir: &Path) -> BTreeMap<(String, String, String), usize> {
    let mut written = BTreeMap::new();
    let events = admin_dir.join("events");
    for file in parquet::list(&events, EventKind::Exposure).expect("list") {
        for event in parquet::read_events(&file, EventKind::Exposure).expect("read") {
            if let Event::Exposure(exposure) = event {
                *written
                    .entry((exposure.user_id, exposure.experiment_id, exposure.variant))
                    .or_default() += 1;
            }
        }
    }
    written
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplicaStop {
    Sigterm,
    /// SIGKILL once the spool holds the outage's exposures.
    SigkillAfterSpooling,
}

async fn replica_restarted_during_an_admin_outage(stop: ReplicaStop) {
    let admin_dir = tempfile::tempdir().expect("dir");
    let replica_dir = tempfile::tempdir().expect("dir");
    let spool: PathBuf = replica_dir.path().join("spool").join("exposures");

    let admin = Expd::start(admin_dir.path(), "127.0.0.1:0", &[]);
    // The restarted admin comes back on the same address, which the
    // replica follows.
    let admin_addr = admin.grpc.clone();
    create_and_start_seed_experiment(&admin).await;
    let source = format!("http://{admin_addr}");
    // A short grace: the sender tries for half of it at shutdown, then
    // spools what it holds.
    let replica_args = [
        "--services",
        "assign",
        "--config-source",
        source.as_str(),
        "--shutdown-grace",
        "2s",
    ];
    let replica = Expd::start(replica_dir.path(), "127.0.0.1:0", &replica_args);
    let mut assigned = Assigned::default();
    let mut client = AssignmentServiceClient::new(replica.channel().await);
    wait_until(Duration::from_secs(10), async || {
        assigned
            .assign(&mut client, "user-first")
            .await
            .then_some(())
    })
    .await
    .expect("the replica has the config within 10 s");
    for index in 0..BEFORE_OUTAGE {
        assert!(
            assigned
                .assign(&mut client, &format!("user-up-{index}"))
                .await
        );
    }

    // These go out as they would any day.
    let before = assigned.users().len() as u64;
    wait_until(Duration::from_secs(20), async || {
        (exposed_units(&admin).await? == before).then_some(())
    })
    .await
    .expect("the admin counts the exposures before its outage within 20 s");

    admin.terminate();
    let outage = Instant::now();
    for index in 0..DURING_OUTAGE {
        assert!(
            assigned
                .assign(&mut client, &format!("user-down-{index}"))
                .await,
            "the replica serves while its admin is down"
        );
    }
    match stop {
        ReplicaStop::Sigterm => replica.terminate(),
        ReplicaStop::SigkillAfterSpooling => {
            let down: BTreeSet<String> = (0..DURING_OUTAGE)
                .map(|index| format!("user-down-{index}"))
                .collect();
            wait_until(Duration::from_secs(20), async || {
                spooled_users(&spool).is_superset(&down).then_some(())
            })
            .await
            .expect("the spool holds the outage's exposures within 20 s");
            replica.kill();
        }
    }
    let spooled_at_stop = spool_bytes(&spool);

    let replica = Expd::start(replica_dir.path(), "127.0.0.1:0", &replica_args);
    let mut client = AssignmentServiceClient::new(replica.channel().await);
    for index in 0..AFTER_RESTART {
        assert!(
            assigned
                .assign(&mut client, &format!("user-restarted-{index}"))
                .await,
            "the restarted replica serves its saved config"
        );
    }

    let admin = Expd::start(admin_dir.path(), &admin_addr, &[]);
    let outage = outage.elapsed();
    let back = Instant::now();
    let users = assigned.users().len() as u64;
    // Every assigned user counted as exposed, or the deadline: then the
    // event log tells what is missing.
    let delivered = wait_until(Duration::from_secs(60), async || {
        (exposed_units(&admin).await? == users).then_some(())
    })
    .await;
    let delivered_in = back.elapsed();
    if delivered.is_some() {
        wait_until(Duration::from_secs(10), async || {
            read_spool(&spool).ok()?.is_empty().then_some(())
        })
        .await
        .expect("the replica's spool empties once its batches were taken");
    }
    admin.terminate();

    let written = written_exposures(admin_dir.path());
    let expected: BTreeMap<(String, String, String), usize> = assigned
        .0
        .iter()
        .map(|((user, experiment), variant)| {
            ((user.clone(), experiment.clone(), variant.clone()), 1)
        })
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|key| !written.contains_key(*key))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged exposures lost, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(3)]
    );
    let doubled: Vec<_> = written.iter().filter(|(_, count)| **count > 1).collect();
    assert!(doubled.is_empty(), "written more than once: {doubled:?}");
    assert_eq!(written, expected, "nothing but the assigned exposures");
    println!(
        "{stop:?}: {} exposures ({BEFORE_OUTAGE} before the outage, {DURING_OUTAGE} during it, \
         {AFTER_RESTART} after the replica's restart, 1 first), each written once; spool at \
         the stop: {spooled_at_stop} bytes; outage {outage:?}; all delivered {delivered_in:?} \
         after the admin was back",
        expected.len()
    );
}

#[tokio::test]
async fn a_replica_stopped_during_an_admin_outage_delivers_every_acknowledged_exposure_once_the_admin_is_back()
 {
    replica_restarted_during_an_admin_outage(ReplicaStop::Sigterm).await;
}

#[tokio::test]
async fn a_replica_killed_during_an_admin_outage_delivers_what_it_had_spooled() {
    replica_restarted_during_an_admin_outage(ReplicaStop::SigkillAfterSpooling).await;
}
