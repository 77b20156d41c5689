#!/usr/bin/env bash
# Build the fuzz targets (fuzz/, cargo-fuzz on nightly) and run each for
# SECONDS (default 30), one after another on one core.
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]      e.g. scripts/fuzz.sh 600 sdp http
#
# Each target starts from its committed seeds (fuzz/corpus/TARGET, read only)
# plus what earlier runs found (fuzz/target/corpus/TARGET, kept between runs).
# A crash stops the script (exit 1) with the input in fuzz/artifacts/TARGET/:
# reproduce it with `cargo +nightly fuzz run -s none TARGET FILE`, fix the
# library and add a unit test there. Without nightly or cargo-fuzz the script
# says so in one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
  exit 0
fi

seconds=${1:-30}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "fuzz: SECONDS must be a positive integer, not '$seconds'" >&2; exit 2; }
shift || true
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# No sanitizer: the library is safe Rust (ASan finds nothing there that a
# panic does not) and without it builds and runs several times faster.
start=$SECONDS
cargo +nightly fuzz build -s none
echo "fuzz: built ${#targets[@]} targets in $((SECONDS - start)) s" >&2

# The HTTP target's requests may start streams: no FFmpeg may run.
export PIXELPASS_FFMPEG=/nonexistent/pixelpass-fuzz/ffmpeg
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t"
  log="target/fuzz-$t.log"
  if ! cargo +nightly fuzz run -s none "$t" "target/corpus/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "panicked at|ERROR: libFuzzer|Test unit written" -A2 "$log" >&2 || tail -n 30 "$log" >&2
    echo "fuzz: $t FAILED (full log: fuzz/$log)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz: $t: ${runs:-?} runs in ${seconds} s, no crash" >&2
done
