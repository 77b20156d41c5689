#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that run the real
# `pixelpass` binary against ffprobe/ffmpeg. Extra arguments go to the test
# harness filter, e.g. `scripts/test.sh status`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
for tool in cargo ffprobe ffmpeg gst-inspect-1.0; do
  command -v "$tool" >/dev/null 2>&1 || { echo "test: $tool not found; run scripts/setup.sh first" >&2; exit 1; }
done

# str0m's own unit tests on the vendored copy (vendor/str0m): the whole
# suite runs them; a filtered run does not.
if [[ $# -eq 0 ]]; then
  scripts/str0m-tests.sh
fi

# --workspace --all-targets: the library, the `pixelpass` binary its integration
# tests run, the test kit and `pixelpass-bench` (whose own tests run it too).
exec cargo test --locked --workspace --all-targets -- "$@"
