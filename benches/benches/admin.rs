//! The admin path: what a PM's change costs, from validation alone to a
//! durable gRPC update over loopback. Every write is flushed to disk
//! before it is acknowledged, so the disk's flush latency dominates.
//!
//! Run: `cargo bench -p exp-benches --bench admin`.

use std::sync::Arc;

use exp_admin::{Admin, Principal};
use exp_benches::{time_batched, time_each};
use exp_core::{ParamSchema, SystemClock, examples::seed_experiment, lifecycle::Update, validate};
use exp_proto::v1::{self, admin_service_client::AdminServiceClient};
use exp_store::Store;

const UPDATES: usize = 500;

fn main() {
    let schema = ParamSchema::builtin();
    let seed = seed_experiment();
    time_batched(50, 2_000, || {
        std::hint::black_box(validate::experiment(std::hint::black_box(&seed), &schema));
    })
    .print("validate the seed experiment (in process)");

    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let admin = Admin::new(
        store,
        Arc::new(ParamSchema::builtin()),
        Arc::new(SystemClock),
    );
    let author = Principal::system("bench");
    let mut current = admin.create(&seed, &author, "").expect("create");
    time_each(20, UPDATES, |index| {
        let mut proposed = current.clone();
        proposed.traffic_percent = (index % 100) as u32;
        current = admin
            .update(
                Update {
                    proposed: &proposed,
                    mask: &[],
                    rerandomize: false,
                },
                &author,
                "bench",
            )
            .expect("update");
    })
    .print("durable update (in process, flushed)");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(grpc_updates());
}

async fn grpc_updates() {
    let server = exp_e2e::TestServer::start().await;
    let mut client = AdminServiceClient::new(server.channel().await);
    let mut current = client
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(exp_proto::convert::experiment_to_proto(&seed_experiment())),
            reason: String::new(),
        })
        .await
        .expect("create")
        .into_inner()
        .experiment
        .expect("experiment");
    let mut samples = Vec::with_capacity(UPDATES);
    for index in 0..UPDATES + 20 {
        let mut proposed = current.clone();
        proposed.traffic_percent = (index % 100) as u32;
        let started = std::time::Instant::now();
        current = client
            .update_experiment(v1::UpdateExperimentRequest {
                experiment: Some(proposed),
                ..Default::default()
            })
            .await
            .expect("update")
            .into_inner()
            .experiment
            .expect("experiment");
        if index >= 20 {
            samples.push(started.elapsed());
        }
    }
    exp_benches::Summary::of(samples).print("durable UpdateExperiment over gRPC (loopback)");
    let mut samples = Vec::with_capacity(UPDATES);
    for _ in 0..UPDATES {
        let started = std::time::Instant::now();
        client
            .get_experiment(v1::GetExperimentRequest {
                id: current.id.clone(),
            })
            .await
            .expect("get");
        samples.push(started.elapsed());
    }
    exp_benches::Summary::of(samples).print("GetExperiment over gRPC (loopback)");
    server.stop().await;
}
