#!/usr/bin/env bash
# Runs inside `unshare --net` (a network namespace with only loopback):
# starts a pixelpass host, opens its player page in headless Chromium via
# player.mjs, prints player.mjs's JSON line, stops the host by its PID.
#   in-netns.sh PIXELPASS_BIN [player.mjs args…]
set -euo pipefail
bin=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
ip link set lo up
work=$(mktemp -d)
"$bin" host --source test --listen 127.0.0.1:0 --webrtc-udp 127.0.0.1:0 --json --linger 0 \
  --framerate 30 --width 640 --height 360 --bitrate 1500 >"$work/banner" 2>"$work/log" &
host=$!
cleanup() { kill "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [[ -s "$work/banner" ]] && break; sleep 0.05; done
url=$(node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(b.player_url)' "$work/banner") || {
  echo "host did not start:" >&2; cat "$work/log" >&2; exit 2; }
set +e
node "$here/player.mjs" --url "$url" "$@"
rc=$?
set -e
[[ $rc -eq 0 ]] || { echo "--- host log ---" >&2; tail -n 30 "$work/log" >&2; }
exit $rc
