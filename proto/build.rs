//! Compiles `proto/**/*.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["strata/ingest/v1/ingest.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
