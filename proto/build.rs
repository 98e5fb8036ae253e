//! Compiles `proto/longshot/v1/*.proto` with protox (pure Rust, so no system `protoc` is needed),
//! generates prost messages and tonic clients/servers into `OUT_DIR`, and writes the encoded
//! `FileDescriptorSet` next to them for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// The .proto files, relative to the include root `proto/`.
const PROTOS: &[&str] = &[
    "longshot/v1/exchange.proto",
    "longshot/v1/job.proto",
    "longshot/v1/registry.proto",
    "longshot/v1/worker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let include = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");

    // Source info keeps the .proto comments, which become rustdoc on the generated items.
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| include.join(p)).collect();
    let fds = protox::compile(&files, [&include])?;
    fs::write(out_dir.join("longshot_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes`, so multi-megabyte overlap payloads, frames and
        // latents are sliced out of the receive buffer instead of copied into a Vec.
        .bytes(".")
        .compile_fds(fds)?;

    // protox does not print rerun-if-changed lines, so list the inputs ourselves; build.rs
    // itself is covered by cargo's default.
    println!("cargo:rerun-if-changed=proto");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}
