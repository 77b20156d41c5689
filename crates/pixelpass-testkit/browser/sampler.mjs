// Opens the pixelpass player page in headless Debian Chromium and prints,
// once per second of Chromium's own clock, one JSON line of what its WebRTC
// receiver says (getStats) and what the page says about itself
// (window.pixelpassState, when the page defines it):
//
//   node sampler.mjs --url http://ADDR:PORT/TOKEN/ --samples N [--ignore-cert]
//
// Sample t (0..N-1) is taken when the page's performance.now() reaches
// t0 + t × 1000 ms, t0 being the moment the page's document was loaded:
//
//   {"t":3,"ms":3000.4,"pcs":1,"conn":"connected","page":"live",
//    "video":{"framesDecoded":…,"framesPerSecond":…,"frameWidth":…,"frameHeight":…,
//             "freezeCount":…,"totalFreezesDuration":…,"packetsLost":…,"packetsReceived":…,
//             "jitter":…,"nackCount":…,"pliCount":…,"framesDropped":…,"bytesReceived":…,
//             "keyFramesDecoded":…},
//    "audio":{"packetsReceived":…,"packetsLost":…},
//    "pair":{"remote":"198.51.100.1:8861","rtt":0.081,"availableIncomingBitrate":…},
//    "pixelpass":{"layer":1,"paused":false,"estimate_bps":…,…} | null}
//
// `video`/`audio`/`pair` are null until the page has a peer connection with
// such a stream; `pcs` counts the peer connections the page made (a new one
// means it reconnected, and its counters start again from zero); `pair` is
// the selected ICE candidate pair, so a test can tell which path the media
// took. The page's RTCPeerConnection is wrapped before its script runs to
// find the connection, so nothing in the page needs to cooperate.
//
// Before the samples: {"event":"open","chromium":VERSION,"url":…}. Exit
// status 0 after N samples; 2 with {"error":…} on a launch, page or stats
// failure. SIGTERM/SIGINT close the browser before exiting.

import { launchChromium } from "./launch.mjs";

function arg(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = arg("url");
const samples = Number(arg("samples", "10"));
const ignoreCert = process.argv.includes("--ignore-cert");
if (!url || !Number.isInteger(samples) || samples < 1 || samples > 3600) {
  console.error("usage: node sampler.mjs --url URL --samples N (1..3600) [--ignore-cert]");
  process.exit(2);
}

let browser;
async function closeAndExit(code) {
  if (browser) await browser.close().catch(() => {});
  process.exit(code);
}
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => closeAndExit(143));

const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// One sample, taken in the page when its clock reaches `due`.
async function sampleAt(due) {
  await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
  const ms = performance.now() - window.__samplerT0;
  const pcs = window.__pixelpassPcs || [];
  const pc = pcs[pcs.length - 1];
  const stateEl = document.getElementById("state");
  let pixelpass = null;
  try {
    if (window.pixelpassState !== undefined) pixelpass = JSON.parse(JSON.stringify(window.pixelpassState));
  } catch (_) {
    pixelpass = { unreadable: true };
  }
  const out = {
    ms: Math.round(ms * 10) / 10,
    pcs: pcs.length,
    conn: pc ? pc.connectionState : null,
    page: stateEl ? stateEl.textContent : null,
    video: null,
    audio: null,
    pair: null,
    pixelpass,
  };
  if (!pc || pc.connectionState === "closed") return out;
  const pick = (s, keys) => Object.fromEntries(keys.filter((k) => s[k] !== undefined).map((k) => [k, s[k]]));
  const report = await pc.getStats();
  let pairId = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.video = pick(s, [
        "framesDecoded", "framesPerSecond", "frameWidth", "frameHeight", "freezeCount",
        "totalFreezesDuration", "packetsLost", "packetsReceived", "jitter", "nackCount",
        "pliCount", "framesDropped", "bytesReceived", "keyFramesDecoded",
      ]);
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.audio = pick(s, ["packetsReceived", "packetsLost"]);
    }
  });
  const pair = pairId && report.get(pairId);
  if (pair) {
    const remote = report.get(pair.remoteCandidateId);
    out.pair = {
      remote: remote ? `${remote.address}:${remote.port}` : null,
      rtt: pair.currentRoundTripTime ?? null,
      availableIncomingBitrate: pair.availableIncomingBitrate ?? null,
    };
  }
  return out;
}

// A page call that does not come back in time is a failure, not a hang.
function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

try {
  browser = await launchChromium(ignoreCert ? ["--ignore-certificate-errors"] : []);
  const context = await browser.newContext({ ignoreHTTPSErrors: ignoreCert });
  // Without a default route Chromium gathers no ICE candidates unless the
  // page may use the camera/microphone (then it enumerates every interface).
  await context.grantPermissions(["camera", "microphone"]);
  // Keep every peer connection the page makes, before its script runs.
  await context.addInitScript(() => {
    const Original = window.RTCPeerConnection;
    if (!Original) return;
    window.__pixelpassPcs = [];
    class Tracked extends Original {
      constructor(...args) {
        super(...args);
        window.__pixelpassPcs.push(this);
      }
    }
    window.RTCPeerConnection = Tracked;
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`sampler: pageerror: ${e.message}`));
  // `load` never fires while the <video> waits for its first frame.
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 20000 });
  const t0 = await page.evaluate(() => (window.__samplerT0 = performance.now()));
  say({ event: "open", chromium: browser.version(), url });
  for (let t = 0; t < samples; t++) {
    const s = await within(5000, page.evaluate(sampleAt, t0 + t * 1000), `sample ${t}`);
    say({ t, ...s });
  }
} catch (e) {
  say({ error: String(e && e.stack ? e.stack : e) });
  await closeAndExit(2);
}
await closeAndExit(0);
