#!/usr/bin/env bash
# str0m's own unit tests, run on the vendored copy (vendor/str0m, see its
# PIXELPASS.md): every change made there must keep them passing.
#
# The copy is built in a scratch directory, as its own crate, with what its
# tests need and this workspace does not vendor:
# - the optional crypto back ends other than aws-lc-rs (and `drv`) are
#   dropped from the manifest: they are not in this workspace's lockfile;
# - two dev-dependencies it uses are added (serde_json, tracing-subscriber,
#   both already in the workspace's lockfile); a third (systemstat) is used
#   only for its re-export of std's `Duration`, which is used instead.
# Offline, pinned by the workspace's Cargo.lock; built in target/str0m-tests.
# Extra arguments filter tests, e.g. `scripts/str0m-tests.sh rtx_cache`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r vendor/str0m "$scratch/str0m"
cd "$scratch/str0m"

# Drop the sections of the optional back ends, and the features naming them.
awk '
  BEGIN { dropdep = "^(drv|str0m-openssl|str0m-rust-crypto|str0m-apple-crypto|str0m-wincrypto)$" }
  /^\[/ {
    skip = 0
    feats = ($0 == "[features]")
    name = $0
    sub(/^\[(target\..*\.)?dependencies\./, "", name)
    sub(/\]$/, "", name)
    if (name != $0 && name ~ dropdep) { skip = 1 }
  }
  skip { next }
  feats && /^(apple-crypto|drv|openssl|openssl-dimpl|rust-crypto|vendored|wincrypto|wincrypto-dimpl) =/ {
    if ($0 ~ /\[$/) { inarray = 1 }
    next
  }
  inarray { if ($0 ~ /^\]/) { inarray = 0 } ; next }
  { print }
' Cargo.toml >Cargo.toml.new
mv Cargo.toml.new Cargo.toml
cat >>Cargo.toml <<'EOF'

[dev-dependencies]
serde_json = "1"
tracing-subscriber = { version = "0.3", features = ["env-filter"] }

[workspace]
EOF
sed -i 's/use systemstat::Duration;/use std::time::Duration;/' src/bwe/loss_controller.rs
cp "$root/Cargo.lock" Cargo.lock

CARGO_TARGET_DIR="$root/target/str0m-tests" cargo test --offline --lib -- "$@"
