#!/usr/bin/env bash
# Runs inside `unshare --net` (a network namespace with only loopback):
# starts `pixelpass host --source clock`, opens its player page in headless
# Chromium via latency.mjs, prints latency.mjs's JSON line, stops the host.
#   latency-netns.sh PIXELPASS_BIN [--width W] [--height H] [--framerate F]
#                    [--bitrate K] [--seconds N] [--no-audio]
# Used by `pixelpass bench latency --path browser`.
set -euo pipefail
bin=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
width=1280 height=720 framerate=30 bitrate=4000 seconds=10 audio=system
while [[ $# -gt 0 ]]; do
  case $1 in
    --width) width=$2; shift 2 ;;
    --height) height=$2; shift 2 ;;
    --framerate) framerate=$2; shift 2 ;;
    --bitrate) bitrate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --no-audio) audio=none; shift ;;
    *) echo "latency-netns.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
ip link set lo up
work=$(mktemp -d)
"$bin" host --source clock --listen 127.0.0.1:0 --webrtc-udp 127.0.0.1:0 --json --linger 0 \
  --framerate "$framerate" --width "$width" --height "$height" --bitrate "$bitrate" --audio "$audio" \
  >"$work/banner" 2>"$work/log" &
host=$!
cleanup() { kill "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [[ -s "$work/banner" ]] && break; sleep 0.05; done
url=$(node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(b.player_url)' "$work/banner") || {
  echo "host did not start:" >&2; cat "$work/log" >&2; exit 2; }
set +e
node "$here/latency.mjs" --url "$url" --seconds "$seconds"
rc=$?
set -e
[[ $rc -eq 0 ]] || { echo "--- host log ---" >&2; tail -n 30 "$work/log" >&2; }
exit $rc
