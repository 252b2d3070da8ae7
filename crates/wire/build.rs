// Compiles proto/ with a pure-Rust protobuf compiler (protox) so that a fresh
// machine needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["../../proto/mattermost/calls/v1/plugin.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["../../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
