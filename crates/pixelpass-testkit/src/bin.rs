//! Where the binaries under test are: `pixelpass` and `pixelpass-bench` are
//! built into the same target directory as the test or benchmark that runs
//! them (`cargo test --workspace --all-targets` builds both).

use std::path::PathBuf;

/// The `pixelpass` binary: `$PIXELPASS_BIN`, else beside this executable.
/// For tests: panics, naming the fix, when it is not built.
pub fn pixelpass() -> PathBuf {
    find("PIXELPASS_BIN", "pixelpass").unwrap_or_else(|e| panic!("{e}"))
}

/// [`pixelpass`] for a benchmark: an error instead of a panic.
pub fn try_pixelpass() -> anyhow::Result<PathBuf> {
    find("PIXELPASS_BIN", "pixelpass").map_err(anyhow::Error::msg)
}

/// The `pixelpass-bench` binary: `$PIXELPASS_BENCH_BIN`, else beside this executable.
pub fn pixelpass_bench() -> PathBuf {
    find("PIXELPASS_BENCH_BIN", "pixelpass-bench").unwrap_or_else(|e| panic!("{e}"))
}

/// The test kit's own files (the browser scripts, the headless session).
pub fn kit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn find(var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(var) {
        return Ok(PathBuf::from(p));
    }
    // target/debug/deps/test-1234 → target/debug/NAME; target/release/pixelpass-bench → target/release/NAME.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{name} is not built at {}: run `cargo build --workspace` (or set {var})",
            path.display()
        ))
    }
}
