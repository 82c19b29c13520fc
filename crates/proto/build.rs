//! Compiles `proto/experiments/v1/*.proto` with protox, a pure-Rust protobuf
//! compiler, so a fresh machine needs no system `protoc`. Generates:
//!
//! - `experiments.v1.rs`: prost messages plus tonic clients and servers
//!   (servers with default `UNIMPLEMENTED` methods, so an RPC that a later
//!   release implements still answers cleanly today);
//! - `experiments_v1_descriptor.bin`: the encoded `FileDescriptorSet`, with
//!   every import, served by gRPC reflection.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "../../proto";
const PROTO_FILES: &[&str] = &[
    "experiments/v1/experiment.proto",
    "experiments/v1/admin_service.proto",
    "experiments/v1/assignment_service.proto",
    "experiments/v1/config_service.proto",
    "experiments/v1/event_service.proto",
    "experiments/v1/results_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("experiments_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
