// Opens the pixelpass player page in headless Debian Chromium and reports,
// as one JSON line on stdout, what the <video> really decoded.
//
//   node player.mjs --url http://127.0.0.1:PORT/TOKEN/ [--seconds 10] [--frames 30] [--screenshot out.png] [--ignore-cert]
//
// --ignore-cert accepts any certificate (a server with a test CA).
// --reconnect: once --frames played, print {"phase":"playing"} and keep
// watching: the page must lose the stream (its state leaves "live") and play
// --frames more after it comes back, by itself, within --seconds.
//
// Exit status 0 when the page decoded at least --frames frames within
// --seconds and a sampled frame is not uniformly black; 1 otherwise; 2 on
// a usage or launch error. Meant to run inside a network namespace that has
// only loopback (tests/player_browser.rs does that).

import { launchChromium } from "./launch.mjs";

function arg(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const url = arg("url");
const seconds = Number(arg("seconds", "10"));
const wantFrames = Number(arg("frames", "30"));
const screenshot = arg("screenshot");
const ignoreCert = process.argv.includes("--ignore-cert");
const reconnect = process.argv.includes("--reconnect");
// --choose-layer N: once --frames played, pick layer N in the page's
// quality menu (as a viewer would) and wait, within --seconds, for the
// picture to change size and --frames more to play; the result says the
// sizes before and after, the menu's entries and what the page showed.
const chooseLayer = arg("choose-layer");
// --wait-link: once --frames played, wait (within --seconds) until the
// server reports a bandwidth estimate for this viewer (the page's
// window.pixelpassState, polled each second); the result's `link` is it.
const waitLink = process.argv.includes("--wait-link");
if (!url) {
  console.error("usage: node player.mjs --url URL [--seconds N] [--frames N] [--screenshot FILE]");
  process.exit(2);
}

let browser;
let result = { ok: false };
try {
  browser = await launchChromium(ignoreCert ? ["--ignore-certificate-errors"] : []);
  const context = await browser.newContext({ ignoreHTTPSErrors: ignoreCert });
  // In a network namespace without a default route Chromium gathers no ICE
  // candidates unless the page may use the camera/microphone (then it
  // enumerates every interface); the page never asks for them.
  await context.grantPermissions(["camera", "microphone"]);
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const t0 = Date.now();
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 10000 });
  // Count frames as the compositor presents them.
  await page.evaluate(() => {
    const v = document.getElementById("video");
    window.__frames = 0;
    window.__firstFrameAt = 0;
    const tick = () => {
      window.__frames++;
      if (!window.__firstFrameAt) window.__firstFrameAt = performance.now();
      v.requestVideoFrameCallback(tick);
    };
    v.requestVideoFrameCallback(tick);
  });
  const deadline = t0 + seconds * 1000;
  let state = {};
  while (Date.now() < deadline) {
    state = await page.evaluate(() => {
      const v = document.getElementById("video");
      const q = v.getVideoPlaybackQuality();
      return {
        frames: Math.max(window.__frames, q.totalVideoFrames - q.droppedVideoFrames),
        callbackFrames: window.__frames,
        decoded: q.totalVideoFrames,
        dropped: q.droppedVideoFrames,
        width: v.videoWidth,
        height: v.videoHeight,
        state: document.getElementById("state").textContent,
        message: document.getElementById("message").textContent,
        firstFrameMs: window.__firstFrameAt ? Math.round(window.__firstFrameAt) : null,
      };
    });
    if (state.frames >= wantFrames) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (reconnect && state.frames >= wantFrames) {
    console.log(JSON.stringify({ phase: "playing", frames: state.frames }));
    let lost = false, base = 0;
    const until = Date.now() + seconds * 1000;
    let again = false;
    while (Date.now() < until) {
      const s = await page.evaluate(() => ({
        frames: window.__frames,
        state: document.getElementById("state").textContent,
      }));
      if (!lost && s.state !== "live") { lost = true; base = s.frames; state.lostState = s.state; }
      if (lost && s.state === "live" && s.frames >= base + wantFrames) { again = true; state.framesAfter = s.frames - base; break; }
      await new Promise((r) => setTimeout(r, 200));
    }
    state.reconnected = again;
    if (!again) state.frames = 0; // not ok
  }
  // How long the page took to play (what a choice of layer takes is not in it).
  const elapsedMs = Date.now() - t0;
  if (waitLink && state.frames >= wantFrames) {
    const until = Date.now() + seconds * 1000;
    let link = null;
    while (Date.now() < until) {
      link = await page.evaluate(() => window.pixelpassState);
      if (link && link.estimate_bps) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    state.link = link;
    if (!link || !link.estimate_bps) state.frames = 0; // not ok: no estimate came
  }
  if (chooseLayer !== undefined && state.frames >= wantFrames) {
    const before = { width: state.width, height: state.height };
    state.menu = await page.evaluate(() => {
      const q = document.getElementById("quality");
      return { hidden: q.hidden, options: [...q.options].map((o) => o.value + "=" + o.textContent) };
    });
    await page.selectOption("#quality", String(chooseLayer));
    const until = Date.now() + seconds * 1000;
    let after = null;
    while (Date.now() < until) {
      const s = await page.evaluate(() => {
        const v = document.getElementById("video");
        return { frames: window.__frames, width: v.videoWidth, height: v.videoHeight,
                 info: document.getElementById("info").textContent, pp: window.pixelpassState };
      });
      if (!after && s.height && s.height !== before.height) after = { ...s };
      if (after && s.frames >= after.frames + wantFrames) { after.info = s.info; after.pp = s.pp; break; }
      await new Promise((r) => setTimeout(r, 200));
    }
    state.before = before;
    state.after = after;
    if (!after) state.frames = 0; // not ok: the picture never changed
  }
  // Sample the current frame: mean and spread of luma.
  const sample = await page.evaluate(() => {
    const v = document.getElementById("video");
    if (!v.videoWidth) return null;
    const c = document.createElement("canvas");
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sum2 = 0, n = 0;
    for (let i = 0; i < d.length; i += 4 * 16) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y; sum2 += y * y; n++;
    }
    const mean = sum / n;
    return { mean, stddev: Math.sqrt(Math.max(0, sum2 / n - mean * mean)) };
  });
  if (screenshot) await page.screenshot({ path: screenshot });
  const notBlack = !!sample && (sample.mean > 16 || sample.stddev > 8);
  result = { ok: state.frames >= wantFrames && notBlack, elapsedMs, ...state, sample, notBlack, logs: logs.slice(-20) };
} catch (e) {
  result = { ok: false, error: String(e && e.stack ? e.stack : e) };
} finally {
  if (browser) await browser.close().catch(() => {});
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : result.error ? 2 : 1);
