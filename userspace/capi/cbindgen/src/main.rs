//! Generates the C header of hwlink's C API.
//!
//! ```text
//! cargo run --manifest-path userspace/capi/cbindgen/Cargo.toml -- OUT_PATH
//! ```
//!
//! reads the `hwlink-capi` crate (`userspace/capi`, found relative to this
//! crate, so the working directory does not matter) with the settings of
//! `userspace/capi/cbindgen.toml`, and writes the header to `OUT_PATH`.
//! `ci/check-cheader.sh` runs it and compares the result with the committed
//! `userspace/capi/include/hwlink.h`.
//!
//! The output is deterministic: cbindgen is pinned, and nothing
//! machine-specific (paths, dates, versions) is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn generate(out: &Path) -> Result<(), String> {
    let dir = crate_dir();
    let config_path = dir.join("cbindgen.toml");
    let config = cbindgen::Config::from_file(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .map_err(|e| format!("cbindgen failed on {}: {e}", dir.display()))?;
    bindings.write_to_file(out);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out_path] = args.as_slice() else {
        eprintln!("usage: hwlink-capi-cbindgen OUT_PATH");
        return ExitCode::from(2);
    };
    if let Err(e) = generate(Path::new(out_path)) {
        eprintln!("hwlink-capi-cbindgen: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
