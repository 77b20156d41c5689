#!/usr/bin/env bash
# A private, headless Wayland desktop for the tests, then a command inside it.
#
#   crates/pixelpass-testkit/session/headless-session.sh [options] [--] COMMAND [ARGS...]
#
# Brings up, each as a child whose PID this script keeps and tears down
# (in reverse order) when COMMAND ends or this script is signalled:
#
#   - a private D-Bus session bus;
#   - PipeWire + WirePlumber + pipewire-pulse, with a null sink made the
#     default (so "system audio" = that sink's monitor);
#   - sway on the headless wlroots backend with the pixman renderer (one
#     output, HEADLESS-1). sway refuses to run as root: as root it runs in a
#     user namespace (`unshare --user`), or as `nobody` where that fails;
#   - an animated full-screen client (the screencast delivers frames on damage
#     only): a moving ball on a known solid background colour;
#   - xdg-desktop-portal (XDG_CURRENT_DESKTOP=sway, a private portals dir
#     holding only wlr.portal) and xdg-desktop-portal-wlr configured with
#     chooser_type=none, output_name=HEADLESS-1 and persistent grants, so a
#     ScreenCast needs no person at a dialog.
#
# COMMAND runs with XDG_RUNTIME_DIR, WAYLAND_DISPLAY, DBUS_SESSION_BUS_ADDRESS,
# PULSE_SERVER, XDG_CURRENT_DESKTOP=sway set (DISPLAY unset), and
# PIXELPASS_SESSION_DIR = the session's private directory (logs in its
# `logs/`, one file per component). Its stdin is this script's stdin. The exit
# status is COMMAND's (or 2 when the session could not come up).
#
# Options:
#   --xdpw PATH      the (patched) xdg-desktop-portal-wlr binary; default:
#                    $PIXELPASS_XDPW, else target/xdpw/libexec/xdg-desktop-portal-wlr
#                    (built by scripts/setup.sh), else /usr/libexec/xdg-desktop-portal-wlr
#   --size WxH       output size (default 1280x720)
#   --colour RRGGBB  the client's background colour (default 3366cc)
#   --fps N          the client's frame rate (default 30)
#   --no-client      no animated client (a static screen)
#   --pattern P      the client's picture: ball (default: a ball moving on
#                    --colour) or smpte (colour bars scrolling one pixel per
#                    frame, like `pixelpass host --source test`)
#   --output NAME    the output the portal picks without asking (default
#                    HEADLESS-1; a name that does not exist = the person
#                    cancelled the dialog)
#   --keep           keep the session directory (logs) afterwards
#
# Needs: dbus-daemon, pipewire, wireplumber, pipewire-pulse, pactl, sway,
# gst-launch-1.0 with waylandsink, /usr/libexec/xdg-desktop-portal
# (all installed by scripts/setup.sh).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"  # the workspace root (this is crates/pixelpass-testkit/session)

xdpw="${PIXELPASS_XDPW:-}"
size=1280x720
colour=3366cc
fps=30
client=1
keep=0
pick_output=HEADLESS-1
pattern=ball
while [[ $# -gt 0 ]]; do
  case "$1" in
    --xdpw) xdpw="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --colour|--color) colour="$2"; shift 2 ;;
    --fps) fps="$2"; shift 2 ;;
    --no-client) client=0; shift ;;
    --output) pick_output="$2"; shift 2 ;;
    --pattern) pattern="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -*) echo "headless-session: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [options] [--] COMMAND [ARGS...]" >&2; exit 2; }
[[ $size =~ ^([0-9]+)x([0-9]+)$ ]] || { echo "headless-session: --size WxH, not $size" >&2; exit 2; }
width=${BASH_REMATCH[1]}
height=${BASH_REMATCH[2]}
[[ $colour =~ ^[0-9a-fA-F]{6}$ ]] || { echo "headless-session: --colour RRGGBB, not $colour" >&2; exit 2; }
case "$pattern" in
  ball) picture=(pattern=ball "background-color=0xff$colour" foreground-color=0xffffffff motion=wavy animation-mode=frames) ;;
  smpte) picture=(pattern=smpte horizontal-speed=1) ;;
  *) echo "headless-session: --pattern ball|smpte, not $pattern" >&2; exit 2 ;;
esac

if [[ -z $xdpw ]]; then
  for c in "$root/target/xdpw/libexec/xdg-desktop-portal-wlr" /usr/libexec/xdg-desktop-portal-wlr; do
    if [[ -x $c ]]; then xdpw=$c; break; fi
  done
fi
[[ -n $xdpw && -x $xdpw ]] || { echo "headless-session: no xdg-desktop-portal-wlr (run scripts/setup.sh)" >&2; exit 2; }
for tool in dbus-daemon dbus-send pipewire wireplumber pipewire-pulse pactl sway gst-launch-1.0; do
  command -v "$tool" >/dev/null 2>&1 || { echo "headless-session: $tool not found (run scripts/setup.sh)" >&2; exit 2; }
done
portal=/usr/libexec/xdg-desktop-portal
[[ -x $portal ]] || { echo "headless-session: $portal not found (apt-get install xdg-desktop-portal)" >&2; exit 2; }

dir=$(mktemp -d /tmp/pixelpass-session.XXXXXX)
chmod 700 "$dir"
mkdir -p "$dir/logs" "$dir/portals" "$dir/config" "$dir/data" "$dir/state" "$dir/cache"
log() { printf 'headless-session: %s\n' "$*" >&2; }

# ── teardown: our children by PID, newest first ────────────────────────────
pids=()
names=()
torn=0
child_pids_of() { # direct children of $1 (services the bus activated), from /proc
  local parent=$1 p stat
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    stat=${stat##*) }
    set -- $stat
    if [[ ${2:-} == "$parent" ]]; then echo "${p#/proc/}"; fi
  done
}
teardown() {
  [[ $torn -eq 1 ]] && return
  torn=1
  local i pid extra
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    if [[ ${names[$i]} == dbus-daemon ]]; then
      # Services the bus started for us (permission store, ...): by parent PID.
      for extra in $(child_pids_of "$pid"); do kill -TERM "$extra" 2>/dev/null; done
    fi
    kill -TERM "$pid" 2>/dev/null
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "${names[$i]} ($pid) did not stop on SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if [[ $keep -eq 1 ]]; then
    log "session directory kept: $dir"
  else
    rm -rf "$dir"
  fi
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: a child in the background, stdin closed, output to logs/NAME.log.
start() {
  local name=$1
  shift
  "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}

fail() {
  log "$*"
  local f
  for f in "$dir"/logs/*.log; do
    [[ -s $f ]] || continue
    log "── ${f##*/} (last lines)"
    tail -n 15 "$f" >&2
  done
  exit 2
}

# wait_for SECONDS DESCRIPTION TEST...: poll TEST every 20 ms.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local n=$((secs * 50))
  while ((n-- > 0)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.02
  done
  fail "timed out after ${secs}s waiting for $what"
}

alive() { # alive INDEX-NAME: the child called NAME still runs
  local i
  for i in "${!names[@]}"; do
    if [[ ${names[$i]} == "$1" ]]; then kill -0 "${pids[$i]}" 2>/dev/null; return; fi
  done
  return 1
}

has_owner() {
  alive dbus-daemon || return 1
  dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner "string:$1" 2>/dev/null | grep -q 'boolean true'
}

t0=$(date +%s%N)

# ── environment shared by every component and COMMAND ─────────────────────
export XDG_RUNTIME_DIR="$dir"
export PIPEWIRE_RUNTIME_DIR="$dir"
export XDG_CONFIG_HOME="$dir/config"
export XDG_DATA_HOME="$dir/data"
export XDG_STATE_HOME="$dir/state"
export XDG_CACHE_HOME="$dir/cache"
export XDG_CURRENT_DESKTOP=sway
export XDG_SESSION_TYPE=wayland
export DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/bus"
export PULSE_SERVER="unix:$dir/pulse/native"
export PIXELPASS_SESSION_DIR="$dir"
unset DISPLAY WAYLAND_DISPLAY SWAYSOCK PULSE_RUNTIME_PATH
unset GST_PLUGIN_FEATURE_RANK

# ── D-Bus ──────────────────────────────────────────────────────────────────
start dbus-daemon dbus-daemon --session --nofork --nopidfile --address="$DBUS_SESSION_BUS_ADDRESS"
wait_for 5 "the D-Bus session bus" has_owner org.freedesktop.DBus

# ── PipeWire, WirePlumber, pipewire-pulse, a default null sink ─────────────
start pipewire pipewire
wait_for 5 "the PipeWire socket" test -S "$dir/pipewire-0"
start wireplumber wireplumber
start pipewire-pulse pipewire-pulse
wait_for 5 "the pipewire-pulse socket" pactl info
pactl load-module module-null-sink sink_name=pixelpass_null \
  sink_properties=device.description=pixelpass-null >/dev/null \
  || fail "pactl could not load a null sink"
# WirePlumber may not be ready to take the default yet: ask until it is.
make_default() { pactl set-default-sink pixelpass_null && [[ $(pactl get-default-sink) == pixelpass_null ]]; }
wait_for 10 "the null sink to become the default" make_default

# ── sway, headless ─────────────────────────────────────────────────────────
cat >"$dir/sway.conf" <<EOF
xwayland disable
output HEADLESS-1 resolution ${width}x${height} position 0 0 scale 1
default_border none
default_floating_border none
focus_follows_mouse no
seat * hide_cursor 1
EOF
sway_cmd=(sway --config "$dir/sway.conf")
if [[ $(id -u) -eq 0 ]]; then
  if unshare --user true 2>/dev/null; then
    sway_cmd=(unshare --user "${sway_cmd[@]}")
  elif command -v setpriv >/dev/null 2>&1; then
    # No user namespaces here: run sway as nobody in a directory it may use.
    chmod 711 "$dir"
    mkdir -p "$dir/sway"
    chown 65534:65534 "$dir/sway"
    sway_cmd=(env XDG_RUNTIME_DIR="$dir/sway" setpriv --reuid=65534 --regid=65534 --clear-groups "${sway_cmd[@]}")
  else
    fail "sway refuses to run as root, and neither unshare --user nor setpriv works here"
  fi
fi
WLR_BACKENDS=headless WLR_RENDERER=pixman WLR_LIBINPUT_NO_DEVICES=1 WLR_HEADLESS_OUTPUTS=1 \
  start sway "${sway_cmd[@]}"
wayland_socket() {
  local s
  for s in "$dir"/wayland-[0-9] "$dir"/sway/wayland-[0-9]; do
    if [[ -S $s ]]; then echo "$s"; return 0; fi
  done
  return 1
}
wait_for 10 "sway's Wayland socket" wayland_socket
sock=$(wayland_socket)
if [[ ${sock%/*} != "$dir" ]]; then
  ln -s "$sock" "$dir/${sock##*/}"
fi
export WAYLAND_DISPLAY=${sock##*/}

# ── the animated client: a ball moving on a solid colour, full screen ─────
if [[ $client -eq 1 ]]; then
  start client gst-launch-1.0 -q videotestsrc is-live=true "${picture[@]}" \
    ! "video/x-raw,format=BGRx,width=$width,height=$height,framerate=$fps/1" \
    ! waylandsink sync=false
fi

# ── the portals ────────────────────────────────────────────────────────────
cat >"$dir/xdpw.conf" <<EOF
[screencast]
output_name=$pick_output
chooser_type=none
max_fps=$fps
EOF
# A chooser would ask whether to remember the choice: say yes.
XDPW_PERSIST_MODE=permanent start xdpw "$xdpw" --loglevel=INFO --config="$dir/xdpw.conf"
wait_for 10 "xdg-desktop-portal-wlr on the bus" has_owner org.freedesktop.impl.portal.desktop.wlr
cat >"$dir/portals/wlr.portal" <<EOF
[portal]
DBusName=org.freedesktop.impl.portal.desktop.wlr
Interfaces=org.freedesktop.impl.portal.Screenshot;org.freedesktop.impl.portal.ScreenCast;
UseIn=wlroots;sway;Wayfire;river;phosh;Hyprland;
EOF
XDG_DESKTOP_PORTAL_DIR="$dir/portals" start portal "$portal" --verbose
wait_for 10 "xdg-desktop-portal on the bus" has_owner org.freedesktop.portal.Desktop
if [[ $client -eq 1 ]]; then
  # Ready when sway shows the client's window (mapped = its first frame is on screen).
  ipc_socket() {
    local s
    for s in "$dir"/sway-ipc.*.sock "$dir"/sway/sway-ipc.*.sock; do
      if [[ -S $s ]]; then echo "$s"; return 0; fi
    done
    return 1
  }
  client_pid=${pids[-1]}
  for i in "${!names[@]}"; do [[ ${names[$i]} == client ]] && client_pid=${pids[$i]}; done
  client_mapped() {
    alive client || return 1
    swaymsg -s "$(ipc_socket)" -t get_tree 2>/dev/null | grep -q "\"pid\": $client_pid,"
  }
  wait_for 10 "the animated client's window" client_mapped
  export SWAYSOCK=$(ipc_socket)
fi

ms=$((($(date +%s%N) - t0) / 1000000))
log "up in ${ms} ms: WAYLAND_DISPLAY=$WAYLAND_DISPLAY, output HEADLESS-1 ${width}x${height}, dir $dir"

"$@"
status=$?
exit "$status"
