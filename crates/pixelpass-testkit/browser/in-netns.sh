#!/usr/bin/env bash
# Runs inside `unshare --net` (a network namespace with only loopback):
# starts a pixelpass host (or `serve`), opens its player page in headless
# Chromium via a script of this directory, prints that script's JSON line,
# stops the server.
#   in-netns.sh PIXELPASS_BIN [--host ARG]… [--serve CONFIG] [--script NAME.mjs] [script args…]
# --host: one argument for `pixelpass host` (repeat; default: the test
# pattern at 640x360, 30 fps, 1500 kbit/s). --serve: run `pixelpass serve
# --config CONFIG` instead and open its first stream's page. --script:
# player.mjs (default) or latency.mjs. --block-udp: drop every UDP packet in
# the namespace (nftables), as a firewall that lets only TCP through.
set -euo pipefail
bin=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
host_args=() script=player.mjs serve_config= block_udp=
while [[ $# -gt 0 ]]; do
  case $1 in
    --host) host_args+=("$2"); shift 2 ;;
    --serve) serve_config=$2; shift 2 ;;
    --script) script=$2; shift 2 ;;
    --block-udp) block_udp=1; shift ;;
    *) break ;;
  esac
done
[[ ${#host_args[@]} -gt 0 ]] || host_args=(--source test --framerate 30 --width 640 --height 360 --bitrate 1500)
ip link set lo up
if [[ -n $block_udp ]]; then
  nft -f - <<'NFT'
table inet no_udp {
  chain out { type filter hook output priority 0; meta l4proto udp drop; }
}
NFT
fi
work=$(mktemp -d)
if [[ -n $serve_config ]]; then
  "$bin" serve --config "$serve_config" --listen 127.0.0.1:0 --webrtc-udp 127.0.0.1:0 --json \
    >"$work/banner" 2>"$work/log" &
  # serve's banner: the first stream's page, made absolute.
  pick='const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(b.streams[0].player)'
else
  "$bin" host --listen 127.0.0.1:0 --webrtc-udp 127.0.0.1:0 --json --linger 0 "${host_args[@]}" \
    >"$work/banner" 2>"$work/log" &
  pick='const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(b.player_url)'
fi
host=$!
cleanup() { kill "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [[ -s "$work/banner" ]] && break; sleep 0.05; done
url=$(node -e "$pick" "$work/banner") || {
  echo "host did not start:" >&2; cat "$work/log" >&2; exit 2; }
set +e
node "$here/$script" --url "$url" "$@"
rc=$?
set -e
[[ $rc -eq 0 ]] || { echo "--- host log ---" >&2; tail -n 30 "$work/log" >&2; }
exit $rc
