//! Compiles `proto/**/*.proto` with protox (pure Rust, no system `protoc`):
//! messages with prost, gRPC services with tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["strata/ingest/v1/ingest.proto", "strata/store/v1/store.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().build_transport(false).compile_fds(fds)?;
    Ok(())
}
