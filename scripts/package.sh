#!/usr/bin/env bash
# Build the Debian package: target/debian/pixelpass_VERSION-1_ARCH.deb.
#
#   scripts/package.sh          release build of the `pixelpass` binary, its
#                               completions and man pages, then `cargo deb`
#
# Idempotent: cargo-deb is installed (from crates.io, pinned) only when it is
# missing; the release build rebuilds only what changed; the generated files
# and the .deb are made anew each time. Needs what scripts/setup.sh installs.
# Metadata: [package.metadata.deb] in Cargo.toml; unit files, example config
# and maintainer scripts: packaging/.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0

log() { printf 'package: %s\n' "$*" >&2; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found; run scripts/setup.sh first"

if ! cargo deb --version >/dev/null 2>&1; then
  log "cargo-deb not found: cargo install cargo-deb --locked --version $CARGO_DEB_VERSION (a few minutes)"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet \
    || die "cargo install cargo-deb failed"
fi

log "release build of pixelpass"
cargo build --release --locked -p pixelpass-cli --bin pixelpass

target=${CARGO_TARGET_DIR:-target}
bin="$target/release/pixelpass"
# Cargo.toml's assets name target/release/pkg/…; cargo-deb maps target/release
# to the real target directory, as for the binary.
pkg="$target/release/pkg"
rm -rf "$pkg"
mkdir -p "$pkg/completions" "$pkg/man"
"$bin" completions bash >"$pkg/completions/pixelpass"
"$bin" completions zsh >"$pkg/completions/_pixelpass"
"$bin" completions fish >"$pkg/completions/pixelpass.fish"
"$bin" manpages "$pkg/man" >/dev/null
# Debian wants man pages compressed; -n: no name or time stamp inside, so the
# same binary gives the same bytes.
gzip -9nf "$pkg"/man/*.1

log "cargo deb"
deb=$(cargo deb --no-build --strip --locked -p pixelpass-cli --quiet)
[[ -f $deb ]] || die "cargo deb printed no package path (got: $deb)"
log "$deb: $(du -h "$deb" | cut -f1), installed size $(dpkg-deb --field "$deb" Installed-Size) KiB"
printf '%s\n' "$deb"
