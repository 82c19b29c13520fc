//! Follows a local `expd` and assigns one request locally.
//!
//! Run `cargo run --release` (expd) in one terminal, create and start an
//! experiment on `you_may_also_like` (see the README), then:
//! `cargo run -p exp-client --example assign`.

use std::time::Duration;

use exp_client::{Client, ClientOptions};
use exp_core::evaluate::RequestContext;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::start(ClientOptions {
        endpoint: std::env::var("EXPD_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:50051".into()),
        placements: vec!["you_may_also_like".into()],
        ..ClientOptions::default()
    })?;
    let version = client.wait_for_config(Duration::from_secs(5)).await?;
    let context = RequestContext {
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        ..RequestContext::default()
    };
    let answer = client.assign("u-18224", "s-5f1c9a", &context)?;
    println!("config version {version}");
    for assignment in &answer.assignments {
        println!(
            "{} -> {} ({:?}, by {})",
            assignment.experiment_id,
            assignment.variant,
            assignment.reason,
            assignment.unit_type.as_str()
        );
    }
    println!("params: {}", serde_json_like(&answer.params()));
    Ok(())
}

fn serde_json_like(params: &exp_core::Params) -> String {
    let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}
