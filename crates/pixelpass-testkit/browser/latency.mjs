// Glass-to-glass latency in headless Chromium: opens the pixelpass player
// page of a host running `--source clock` and, for every frame the page
// presents (requestVideoFrameCallback), draws the top 960×40 pixels of the
// video to a canvas and reads the time code (src/latency/code.rs: 48
// squares of 20×20 px, ms since the Unix epoch MSB first, a second row
// below for redundancy). Prints one JSON line:
//
//   {"ok":true,"latencies":[…],"displayLatencies":[…],"unreadable":0,
//    "joinMs":…,"frames":…,"dropped":…,"errors":[…]}
//
// latencies: wall clock when the page's frame callback ran for the frame
// (it runs once the frame is handed to the compositor) minus the time drawn
// into it; displayLatencies: the same for the callback's
// expectedDisplayTime (headless Chromium's vsync is virtual, so this one is
// only indicative). joinMs:
// page navigation start → first frame presented. jitterBufferMs / decodeMs:
// Chromium's own averages for the video track (getStats, inbound-rtp).
//
//   node latency.mjs --url http://127.0.0.1:PORT/TOKEN/ [--seconds 10] [--hls]
//
// --hls: the page's WebRTC is closed and hls.js (from npm, node_modules)
// plays the stream's LL-HLS playlist in the same <video> instead.
//
// Exit status 0 when frames came and all could be read; 1 otherwise; 2 on
// a usage or launch error. Meant to run inside a network namespace that has
// only loopback (in-netns.sh --script latency.mjs).

import { readFileSync } from "node:fs";
import { launchChromium } from "./launch.mjs";

function arg(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = arg("url");
const seconds = Number(arg("seconds", "10"));
const hls = process.argv.includes("--hls");
if (!url || !(seconds > 0)) {
  console.error("usage: node latency.mjs --url URL [--seconds N]");
  process.exit(2);
}

// Runs in the page. Keep in step with src/latency/code.rs.
function install() {
  const BITS = 48, SQUARE = 20, INSET = 4, ONE = 160, ZERO = 96;
  const W = BITS * SQUARE, H = 2 * SQUARE;
  const v = document.getElementById("video");
  const canvas = document.createElement("canvas");
  canvas.width = W;
  canvas.height = H;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const st = (window.__latency = { shown: [], atCallback: [], unreadable: 0, errors: [], first: 0, frames: 0 });
  const mean = (d, row, i) => {
    let sum = 0;
    const side = SQUARE - 2 * INSET;
    for (let y = row * SQUARE + INSET; y < row * SQUARE + INSET + side; y++) {
      for (let x = i * SQUARE + INSET; x < i * SQUARE + INSET + side; x++) {
        const p = (y * W + x) * 4;
        sum += 0.299 * d[p] + 0.587 * d[p + 1] + 0.114 * d[p + 2];
      }
    }
    return sum / (side * side);
  };
  const classify = (m) => (m >= ONE ? 1 : m <= ZERO ? 0 : -1);
  const read = () => {
    const d = g.getImageData(0, 0, W, H).data;
    let value = 0;
    for (let i = 0; i < BITS; i++) {
      const a = classify(mean(d, 0, i)), b = classify(mean(d, 1, i));
      let bit;
      if (a >= 0 && (b < 0 || b === a)) bit = a;
      else if (a < 0 && b >= 0) bit = b;
      else return { error: `bit ${i}: ${a < 0 ? "unclear" : "rows disagree"}` };
      value = value * 2 + bit; // 48 bits: exact in a double
    }
    return { value };
  };
  const tick = (now, meta) => {
    const at = performance.timeOrigin + performance.now();
    st.frames++;
    if (!st.first) st.first = at;
    if (v.videoWidth >= W && v.videoHeight >= H) {
      g.drawImage(v, 0, 0, W, H, 0, 0, W, H);
      const r = read();
      const shown = performance.timeOrigin + meta.expectedDisplayTime;
      if (r.error !== undefined || Math.abs(at - r.value) > 60000) {
        st.unreadable++;
        if (st.errors.length < 5) st.errors.push(r.error || `implausible time ${r.value}`);
      } else {
        st.shown.push(shown - r.value);
        st.atCallback.push(at - r.value);
      }
    } else {
      st.unreadable++;
      if (st.errors.length < 5) st.errors.push(`video is ${v.videoWidth}x${v.videoHeight}`);
    }
    v.requestVideoFrameCallback(tick);
  };
  v.requestVideoFrameCallback(tick);
}

let browser;
let result = { ok: false };
try {
  browser = await launchChromium();
  // hls.js runs as an inline script and may start a worker from a blob.
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, bypassCSP: hls });
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const t0 = Date.now();
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 10000 });
  if (hls) {
    const src = readFileSync(new URL("./node_modules/hls.js/dist/hls.js", import.meta.url), "utf8");
    await page.addScriptTag({ content: src });
    await page.evaluate(async () => {
      // The player page's own globals: stop its WebRTC, then hand the video to hls.js.
      generation++;
      clearTimeout(retryTimer);
      await release();
      const v = document.getElementById("video");
      v.srcObject = null;
      // eslint-disable-next-line no-undef
      // Catch up (play up to 1.5× fast) when behind the target latency (PART-HOLD-BACK).
      const h = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
      window.__hlsErrors = [];
      h.on(Hls.Events.ERROR, (_e, d) => window.__hlsErrors.push(`${d.type}/${d.details}${d.fatal ? " (fatal)" : ""}`));
      h.loadSource(new URL("hls/index.m3u8", location.href).href);
      h.attachMedia(v);
      h.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
      window.__hls = h;
    });
  }
  await page.evaluate(install);
  // Wait for the first frame (at most 15 s), then watch for `seconds`.
  const firstBy = Date.now() + 15000;
  let first = 0;
  while (!first && Date.now() < firstBy) {
    first = await page.evaluate(() => window.__latency.first);
    if (!first) await new Promise((r) => setTimeout(r, 20));
  }
  if (!first) throw new Error("no frame within 15 s: " + logs.slice(-5).join(" | "));
  // Drop what came before this point: the measurement starts now.
  await page.evaluate(() => { const s = window.__latency; s.shown = []; s.atCallback = []; s.unreadable = 0; });
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const st = await page.evaluate(async () => {
    const s = window.__latency;
    const q = document.getElementById("video").getVideoPlaybackQuality();
    // The player page's RTCPeerConnection (a top-level `let pc` there).
    let jitterBufferMs = null, decodeMs = null;
    try {
      for (const r of (await pc.getStats()).values()) {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          if (r.jitterBufferEmittedCount) jitterBufferMs = (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount;
          if (r.framesDecoded) decodeMs = (1000 * r.totalDecodeTime) / r.framesDecoded;
        }
      }
    } catch (_) {}
    const hlsLatency = window.__hls ? window.__hls.latency : null;
    const hlsErrors = window.__hlsErrors || null;
    return { ...s, dropped: q.droppedVideoFrames, decoded: q.totalVideoFrames, jitterBufferMs, decodeMs, hlsLatency, hlsErrors };
  });
  result = {
    ok: st.shown.length > 0 && st.unreadable === 0,
    latencies: st.atCallback.map((x) => Math.round(x * 10) / 10),
    displayLatencies: st.shown.map((x) => Math.round(x * 10) / 10),
    unreadable: st.unreadable,
    errors: st.errors,
    joinMs: Math.round(first - t0),
    frames: st.frames,
    decoded: st.decoded,
    dropped: st.dropped,
    jitterBufferMs: st.jitterBufferMs,
    decodeMs: st.decodeMs,
    hlsLatency: st.hlsLatency,
    hlsErrors: st.hlsErrors,
    logs: logs.slice(-10),
  };
} catch (e) {
  result = { ok: false, error: String(e && e.stack ? e.stack : e) };
} finally {
  if (browser) await browser.close().catch(() => {});
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : result.error ? 2 : 1);
