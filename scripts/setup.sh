#!/usr/bin/env bash
# Install what pixelpass needs to build, run and test on Debian 12 / Ubuntu.
#
# Idempotent and fast when everything is present: apt runs only when
# `dpkg-query` says a package is missing, rustup only when there is no cargo.
# Run as root, or as a user with sudo (apt steps use sudo; Rust goes to the
# invoking user's ~/.cargo).
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ── Debian packages, one list per purpose (adding one is one line) ──────────
PKGS_BUILD=(build-essential pkg-config clang mold git ca-certificates curl)
PKGS_GSTREAMER=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-pipewire gstreamer1.0-pulseaudio gstreamer1.0-x
)
# `pixelpass serve` runs FFmpeg for every stream.
PKGS_SERVE=(ffmpeg)
# The integration tests decode what viewers receive with ffprobe/ffmpeg, and
# run the browser test in a private network namespace (ip, unshare); the
# network lab (crates/pixelpass-testkit/src/netlab) routes through a NAT
# router made with nftables. The LL-HLS test (tests/hls.rs) puts nginx in
# front of the origin as a caching proxy.
PKGS_TEST=(ffmpeg iproute2 util-linux openssl curl nftables nginx-light)
# The Debian package (scripts/package.sh, tests/package.rs): dpkg-shlibdeps for
# its library dependencies, systemd-analyze and systemd-sysusers for the units
# and the postinst, man and groff to render the man pages, readelf (binutils,
# with build-essential) to see the binary is stripped.
PKGS_PACKAGE=(dpkg-dev systemd man-db groff-base)
# Headless Chromium plays the player page (driven by playwright-core from npm).
PKGS_BROWSER=(chromium fonts-dejavu-core)

# Desktop capture tests: a headless Wayland session (crates/pixelpass-testkit/session/headless-session.sh:
# D-Bus, PipeWire + WirePlumber + pipewire-pulse, sway, the portal) and Xvfb for X11.
PKGS_DESKTOP_TEST=(
  dbus-daemon dbus-bin pipewire pipewire-bin wireplumber pipewire-pulse pulseaudio-utils
  sway xdg-desktop-portal xvfb
)
# Building the patched xdg-desktop-portal-wlr for those tests (see build_xdpw).
PKGS_XDPW_BUILD=(
  dpkg-dev meson ninja-build pkg-config
  libdrm-dev libgbm-dev libinih-dev libpipewire-0.3-dev libsystemd-dev libwayland-dev wayland-protocols
)

ALL_PKGS=("${PKGS_BUILD[@]}" "${PKGS_GSTREAMER[@]}" "${PKGS_SERVE[@]}" "${PKGS_TEST[@]}" "${PKGS_PACKAGE[@]}" "${PKGS_BROWSER[@]}"
  "${PKGS_DESKTOP_TEST[@]}" "${PKGS_XDPW_BUILD[@]}")

# Rust: the oldest toolchain that builds the crate (Cargo.toml rust-version).
RUST_MIN=1.92

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()  # decided below, only if apt has work to do
fi

missing_packages() {
  local p
  for p in "$@"; do
    # "ii " = installed and configured.
    if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) != "ii "* ]]; then
      printf '%s\n' "$p"
    fi
  done
}

install_packages() {
  command -v dpkg-query >/dev/null 2>&1 || die "this script supports Debian/Ubuntu (dpkg/apt) only"
  local missing
  mapfile -t missing < <(missing_packages "${ALL_PKGS[@]}")
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Debian packages: all ${#ALL_PKGS[@]} present"
    return
  fi
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    die "need root to install: ${missing[*]} (run as root or install sudo)"
  fi
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  mapfile -t missing < <(missing_packages "${ALL_PKGS[@]}")
  [[ ${#missing[@]} -eq 0 ]] || die "still missing after apt-get install: ${missing[*]}"
}

version_ge() { # version_ge A B: A >= B (dotted numbers)
  [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

install_rust() {
  # A rustup install from an earlier run may not be on PATH yet.
  if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: installing Rust with rustup into $HOME/.cargo"
    local installer
    installer=$(mktemp)
    if ! curl --proto '=https' --tlsv1.2 -sSf --retry 3 --connect-timeout 20 https://sh.rustup.rs -o "$installer"; then
      rm -f "$installer"
      die "cargo is missing and rustup could not be downloaded from https://sh.rustup.rs; install Rust >= $RUST_MIN by hand (https://rustup.rs) and run this again"
    fi
    sh "$installer" -y --profile minimal --default-toolchain stable --no-modify-path >/dev/null \
      || { rm -f "$installer"; die "rustup failed to install the stable toolchain; install Rust >= $RUST_MIN by hand (https://rustup.rs)"; }
    rm -f "$installer"
    export PATH="$HOME/.cargo/bin:$PATH"
    log "installed $(rustc --version); add \$HOME/.cargo/bin to PATH (or: . \"\$HOME/.cargo/env\")"
  fi
  local have
  have=$(rustc --version | awk '{print $2}')
  if ! version_ge "$have" "$RUST_MIN"; then
    if command -v rustup >/dev/null 2>&1; then
      log "rustc $have is older than $RUST_MIN: updating the stable toolchain"
      rustup toolchain install stable --profile minimal >/dev/null
      rustup default stable >/dev/null
      have=$(rustc --version | awk '{print $2}')
      version_ge "$have" "$RUST_MIN" || die "rustc $have is still older than $RUST_MIN"
    else
      die "rustc $have is older than $RUST_MIN (a distribution package?); install a current toolchain with rustup (https://rustup.rs)"
    fi
  fi
  log "Rust: $(cargo --version)"
}

# cargo-deb builds the .deb (scripts/package.sh, which installs the same
# version when it is missing). From crates.io, compiled: about 5 minutes on
# 2 busy cores, once per machine.
CARGO_DEB_VERSION=3.8.0
install_cargo_deb() {
  if cargo deb --version >/dev/null 2>&1; then
    log "cargo-deb: $(cargo deb --version)"
    return
  fi
  log "installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked; a few minutes)"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet \
    || die "cargo install cargo-deb failed"
  log "cargo-deb: $(cargo deb --version)"
}

# cargo-fuzz runs the fuzz targets (scripts/fuzz.sh) on the nightly toolchain;
# installed only where nightly is (rustup toolchain install nightly): without
# it scripts/fuzz.sh skips, saying so.
CARGO_FUZZ_VERSION=0.13.2
install_cargo_fuzz() {
  if ! cargo +nightly --version >/dev/null 2>&1; then
    log "cargo-fuzz: not installed (no nightly toolchain; scripts/fuzz.sh will skip)"
    return
  fi
  if cargo +nightly fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz: $(cargo +nightly fuzz --version)"
    return
  fi
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked)"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --quiet \
    || die "cargo install cargo-fuzz failed"
  log "cargo-fuzz: $(cargo +nightly fuzz --version)"
}

check_gstreamer() {
  # The elements the host pipeline (and serve's WHIP → HTTP-TS remux) needs, with the package that has each.
  local el pkg missing=()
  while read -r el pkg; do
    # --atleast-version: plugins outside GStreamer proper (pipewiresrc) have their own versions.
    gst-inspect-1.0 --exists --atleast-version=0.1 "$el" 2>/dev/null || missing+=("$el ($pkg)")
  done <<'LIST'
videotestsrc gstreamer1.0-plugins-base
audiotestsrc gstreamer1.0-plugins-base
x264enc gstreamer1.0-plugins-ugly
avenc_aac gstreamer1.0-libav
mpegtsmux gstreamer1.0-plugins-bad
h264parse gstreamer1.0-plugins-bad
appsink gstreamer1.0-plugins-base
opusenc gstreamer1.0-plugins-base
rtph264pay gstreamer1.0-plugins-good
rtpopuspay gstreamer1.0-plugins-good
appsrc gstreamer1.0-plugins-base
rtpjitterbuffer gstreamer1.0-plugins-good
rtph264depay gstreamer1.0-plugins-good
rtpopusdepay gstreamer1.0-plugins-good
opusdec gstreamer1.0-plugins-base
pipewiresrc gstreamer1.0-pipewire
ximagesrc gstreamer1.0-plugins-good
pulsesrc gstreamer1.0-pulseaudio
waylandsink gstreamer1.0-plugins-bad
LIST
  if [[ ${#missing[@]} -gt 0 ]]; then
    die "GStreamer elements missing: ${missing[*]}"
  fi
  log "GStreamer: $(gst-inspect-1.0 --version | head -n1 | awk '{print $NF}'), needed elements present"
}

install_node() {
  # Node may come from elsewhere than Debian (its npm conflicts with Debian's):
  # install Debian's only when there is none.
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "node/npm not found: installing Debian's nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/crates/pixelpass-testkit/browser"
  if [[ ! -f "$dir/node_modules/playwright-core/package.json" ]] \
    || ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"; then
    log "npm ci in crates/pixelpass-testkit/browser (playwright-core; the browser is Debian's chromium)"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
  fi
  log "Node: $(node --version), playwright-core $(node -p "require('$dir/node_modules/playwright-core/package.json').version")"
}

# xdg-desktop-portal-wlr 0.7.0 (Debian 12) refuses every ScreenCast on a
# compositor without a GPU renderer (our headless sway): it treats a missing
# dmabuf format as fatal. The tests use Debian's source with a one-hunk patch
# (fall back to shm), built into target/xdpw — nothing is installed system-wide.
# Skipped when already built from the same patch.
build_xdpw() {
  local root prefix patch stamp want
  root="$(cd "$(dirname "$0")/.." && pwd)"
  prefix="$root/target/xdpw"
  patch="$root/crates/pixelpass-testkit/session/xdpw-shm-fallback.patch"
  stamp="$prefix/.built-from"
  want="xdg-desktop-portal-wlr $(sha256sum "$patch" | cut -d' ' -f1)"
  if [[ -x $prefix/libexec/xdg-desktop-portal-wlr && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "patched xdg-desktop-portal-wlr: present ($prefix)"
    return
  fi
  local work
  work=$(mktemp -d)
  # apt-get source drops privileges to _apt where it can: let it write here.
  chmod 755 "$work"
  if ! (cd "$work" && apt-get source -qq xdg-desktop-portal-wlr >/dev/null 2>&1); then
    add_deb_src
    (cd "$work" && apt-get source -qq xdg-desktop-portal-wlr >/dev/null 2>&1) \
      || { rm -rf "$work"; die "apt-get source xdg-desktop-portal-wlr failed (is there a deb-src entry?)"; }
  fi
  local src
  src=$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'xdg-desktop-portal-wlr-*' | head -n1)
  [[ -n $src ]] || { rm -rf "$work"; die "apt-get source gave no xdg-desktop-portal-wlr directory"; }
  log "building ${src##*/} with the shm fallback into $prefix"
  patch -d "$src" -p1 --quiet <"$patch" \
    || { rm -rf "$work"; die "$patch does not apply to ${src##*/} (it is made for Debian 12's 0.7.0)"; }
  rm -rf "$prefix"
  (cd "$src" \
    && meson setup build --prefix="$prefix" -Dsd-bus-provider=libsystemd -Dman-pages=disabled -Dsystemd=disabled >/dev/null \
    && ninja -C build install >/dev/null) \
    || { rm -rf "$work"; die "building xdg-desktop-portal-wlr failed"; }
  rm -rf "$work"
  printf '%s\n' "$want" >"$stamp"
  log "patched xdg-desktop-portal-wlr: built ($prefix/libexec/xdg-desktop-portal-wlr)"
}

# A deb-src entry for the release's main archive (Debian images ship none).
add_deb_src() {
  local id codename file=/etc/apt/sources.list.d/pixelpass-deb-src.sources
  # shellcheck disable=SC1091
  id=$(. /etc/os-release && echo "${ID:-}")
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ $id == debian && -n $codename ]] || die "no deb-src entry for xdg-desktop-portal-wlr; add one for this distribution and run again"
  log "adding a deb-src entry for $codename ($file)"
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$codename" | "${SUDO[@]}" tee "$file" >/dev/null
  "${SUDO[@]}" apt-get update -qq
}

install_packages
install_rust
install_cargo_deb
install_cargo_fuzz
install_node
check_gstreamer
build_xdpw
log "done"
