//! Generates the gRPC code from `proto/` with protox (a pure-Rust protobuf
//! compiler), so building needs no `protoc` on the machine. The encoded
//! descriptor set is also written out for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/reprise/v1/error.proto",
        "proto/reprise/v1/pipeline.proto",
        "proto/reprise/v1/pipeline_service.proto",
        "proto/reprise/v1/execution.proto",
        "proto/reprise/v1/execution_service.proto",
        "proto/reprise/v1/worker_service.proto",
        "proto/reprise/v1/access.proto",
        "proto/reprise/v1/access_service.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("reprise_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps in key order: equal messages encode to equal bytes (the
        // encoded views compare them), and listings print in a stable order.
        .btree_map(".")
        // Written by hand in src/proto.rs: they can carry an execution encoded earlier.
        .extern_path(".reprise.v1.GetExecutionResponse", "crate::proto::GetExecutionResponse")
        .extern_path(".reprise.v1.WatchExecutionResponse", "crate::proto::WatchExecutionResponse")
        .compile_fds(fds)?;
    Ok(())
}
