// A WHIP publisher in headless Debian Chromium, for the relay tests:
// an animated canvas (canvas.captureStream) and a WebAudio oscillator,
// sent as H.264 + Opus (audio transceiver first, then video, like OBS).
//
//   node whip-publish.mjs --url WHIP_ENDPOINT --token BEARER [--seconds 10]
//        [--ignore-cert] [--cross-origin] [--fps 30] [--width 640 --height 360]
//        [--connect-timeout 10]
//   node whip-publish.mjs --self-test [--seconds 3] [--url ORIGIN_FOR_THE_PAGE]
//
// One POST of the complete offer (ICE gathered first, no trickle), the
// answer set, `connectionState == "connected"` awaited, media sent for
// --seconds, the resource DELETEd. Prints ONE JSON line:
//   {"connected":true,"codec":"video/H264","frames_encoded":…,"packets_sent":…,…}
// and exits 0; on failure {"connected":false,"stage":"…","error":"…"} and
// exits 1 (2: usage or browser launch).
//
// The page is served by Playwright at the endpoint's own origin (so the
// POST is same-origin); --cross-origin loads it as about:blank instead
// (origin "null"), which needs the server's CORS answer to OPTIONS.
// --ignore-cert accepts any certificate (a test CA). --self-test sends to a
// second RTCPeerConnection in the page instead of a server: does this
// Chromium encode H.264 for WebRTC (here, in this namespace)?

import { launchChromium } from "./launch.mjs";

function arg(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const flag = (name) => process.argv.includes("--" + name);

const opts = {
  url: arg("url"),
  token: arg("token", ""),
  seconds: Number(arg("seconds", "10")),
  fps: Number(arg("fps", "30")),
  width: Number(arg("width", "640")),
  height: Number(arg("height", "360")),
  connectTimeoutMs: Number(arg("connect-timeout", "10")) * 1000,
  selfTest: flag("self-test"),
};
const ignoreCert = flag("ignore-cert");
const crossOrigin = flag("cross-origin");

function finish(result, code) {
  console.log(JSON.stringify(result));
  process.exit(code);
}

if ((!opts.url && !opts.selfTest) || !(opts.seconds >= 0) || !(opts.fps > 0)) {
  console.error("usage: node whip-publish.mjs --url WHIP_ENDPOINT --token BEARER [--seconds N] [--ignore-cert] [--cross-origin]");
  console.error("       node whip-publish.mjs --self-test [--seconds N]");
  finish({ connected: false, stage: "usage", error: "missing or bad arguments" }, 2);
}

// Everything is bounded: a hang anywhere ends the script with an error line.
const budgetMs = opts.seconds * 1000 + opts.connectTimeoutMs + 30000;
setTimeout(() => finish({ connected: false, stage: "timeout", error: `no result within ${budgetMs} ms` }, 1), budgetMs).unref();

// Runs in the page. Returns the result object, failures included (an
// exception would lose its fields on the way out of page.evaluate).
async function publish(o) {
  try {
    return await attempt(o);
  } catch (e) {
    return { connected: false, stage: e.stage || "page", error: String(e.message || e), ...(e.extra || {}) };
  }
}

async function attempt(o) {
  const fail = (stage, message, extra = {}) => Object.assign(new Error(message), { stage, extra });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const videoCaps = RTCRtpSender.getCapabilities("video")?.codecs ?? [];
  const h264 = videoCaps.filter((c) => c.mimeType.toLowerCase() === "video/h264");
  if (!h264.length) {
    throw fail("codecs", "this Chromium offers no H.264 encoder for WebRTC", {
      video_codecs: [...new Set(videoCaps.map((c) => c.mimeType))],
    });
  }
  // packetization-mode=1 first (what pixelpass and OBS use), then the rest of H.264, then rtx.
  const pm1 = (c) => /packetization-mode=1/.test(c.sdpFmtpLine || "");
  const prefs = [...h264.filter(pm1), ...h264.filter((c) => !pm1(c)), ...videoCaps.filter((c) => c.mimeType.toLowerCase() === "video/rtx")];

  // An animated canvas: a moving bar and a frame counter, so frames differ.
  const canvas = document.createElement("canvas");
  canvas.width = o.width;
  canvas.height = o.height;
  document.body.appendChild(canvas);
  const g = canvas.getContext("2d");
  let n = 0;
  const draw = () => {
    n++;
    g.fillStyle = `hsl(${(n * 3) % 360} 60% 40%)`;
    g.fillRect(0, 0, o.width, o.height);
    g.fillStyle = "#fff";
    g.fillRect((n * 8) % o.width, 0, 40, o.height);
    g.font = "48px sans-serif";
    g.fillText(`frame ${n}`, 20, 60);
  };
  draw();
  const ticker = setInterval(draw, 1000 / o.fps);
  const video = canvas.captureStream(o.fps).getVideoTracks()[0];

  const ac = new AudioContext();
  const osc = ac.createOscillator();
  osc.frequency.value = 440;
  const dest = ac.createMediaStreamDestination();
  osc.connect(dest);
  osc.start();
  await ac.resume();
  const audio = dest.stream.getAudioTracks()[0];

  const media = new MediaStream([audio, video]);
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  const cleanup = [() => clearInterval(ticker), () => osc.stop(), () => ac.close(), () => pc.close()];
  try {
    pc.addTransceiver(audio, { direction: "sendonly", streams: [media] });
    const vt = pc.addTransceiver(video, { direction: "sendonly", streams: [media] });
    vt.setCodecPreferences(prefs);
    await pc.setLocalDescription(await pc.createOffer());
    // No trickle: wait (bounded) for every candidate before the POST.
    const gathered = new Promise((r) => {
      if (pc.iceGatheringState === "complete") r();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
    });
    await Promise.race([gathered, sleep(3000)]);
    const offer = pc.localDescription.sdp;

    let answer, location = null, linkHeader = null, receiver = null;
    if (o.selfTest) {
      receiver = new RTCPeerConnection();
      cleanup.push(() => receiver.close());
      pc.addEventListener("icecandidate", (e) => e.candidate && receiver.addIceCandidate(e.candidate));
      receiver.addEventListener("icecandidate", (e) => e.candidate && pc.addIceCandidate(e.candidate));
      await receiver.setRemoteDescription({ type: "offer", sdp: offer });
      await receiver.setLocalDescription(await receiver.createAnswer());
      answer = receiver.localDescription.sdp;
    } else {
      let res;
      try {
        res = await fetch(o.url, {
          method: "POST",
          headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${o.token}` },
          body: offer,
        });
      } catch (e) {
        throw fail("post", `POST ${o.url} failed: ${e.message} (unreachable, TLS, or CORS refused?)`);
      }
      const body = await res.text();
      if (res.status !== 201) {
        throw fail("post", `POST ${o.url} answered ${res.status}, not 201: ${body.trim().slice(0, 200)}`, { status: res.status });
      }
      const loc = res.headers.get("Location");
      if (!loc) throw fail("post", "201 without a Location header (or not exposed to the page by CORS)", { status: 201 });
      location = new URL(loc, o.url).href;
      linkHeader = res.headers.get("Link");
      answer = body;
    }
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
    } catch (e) {
      throw fail("answer", `the answer was refused: ${e.message}`, { location });
    }

    const t0 = performance.now();
    while (pc.connectionState !== "connected") {
      if (["failed", "closed"].includes(pc.connectionState)) throw fail("connect", `connectionState ${pc.connectionState}`, { location });
      if (performance.now() - t0 > o.connectTimeoutMs) throw fail("connect", `not connected after ${o.connectTimeoutMs} ms (ICE ${pc.iceConnectionState})`, { location });
      await sleep(20);
    }
    const connectMs = Math.round(performance.now() - t0);
    const until = performance.now() + o.seconds * 1000;
    while (performance.now() < until) {
      if (pc.connectionState !== "connected") throw fail("send", `connection lost: ${pc.connectionState}`, { location });
      await sleep(100);
    }

    const stats = await pc.getStats();
    const out = { video: {}, audio: {} };
    let codec = null, fmtp = null;
    stats.forEach((s) => {
      if (s.type === "outbound-rtp") out[s.kind] = s;
    });
    if (out.video.codecId) {
      const c = stats.get(out.video.codecId);
      codec = c?.mimeType ?? null;
      fmtp = c?.sdpFmtpLine ?? null;
    }
    let deleteStatus = null;
    if (location) {
      try {
        deleteStatus = (await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${o.token}` } })).status;
      } catch (e) {
        deleteStatus = `DELETE failed: ${e.message}`;
      }
    }
    return {
      connected: true,
      codec,
      fmtp,
      encoder: out.video.encoderImplementation ?? null,
      frames_encoded: out.video.framesEncoded ?? 0,
      packets_sent: out.video.packetsSent ?? 0,
      bytes_sent: out.video.bytesSent ?? 0,
      frame_width: out.video.frameWidth ?? null,
      frame_height: out.video.frameHeight ?? null,
      audio_packets_sent: out.audio.packetsSent ?? 0,
      connect_ms: connectMs,
      seconds: o.seconds,
      location,
      link: linkHeader,
      delete_status: deleteStatus,
    };
  } finally {
    for (const f of cleanup) {
      try { f(); } catch {}
    }
  }
}

let browser;
let result, code;
try {
  browser = await launchChromium(ignoreCert ? ["--ignore-certificate-errors"] : []);
} catch (e) {
  finish({ connected: false, stage: "launch", error: String(e.message || e) }, 2);
}
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: ignoreCert });
  // Without camera/microphone permission Chromium gathers ICE candidates
  // only on the default route's interface, and the lab's WAN machines have
  // no default route: no candidate at all, ICE stays "new". With it, every
  // interface is used.
  await context.grantPermissions(["camera", "microphone"]);
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const html = "<!doctype html><title>pixelpass WHIP publisher</title><body style='margin:0'></body>";
  if (crossOrigin || !opts.url) {
    await page.setContent(html);
  } else {
    // A page at the endpoint's origin, served by Playwright (never fetched from the server).
    const here = new URL("/__pixelpass_whip_publisher__", opts.url).href;
    await page.route(here, (route) => route.fulfill({ status: 200, contentType: "text/html", body: html }));
    await page.goto(here, { waitUntil: "domcontentloaded", timeout: 10000 });
  }
  // Both functions go to the page: `publish` calls `attempt` there.
  await page.addScriptTag({ content: attempt.toString() });
  result = await page.evaluate(publish, opts);
  code = result.connected && result.frames_encoded > 0 && result.packets_sent > 0 ? 0 : 1;
  if (result.connected && code) result.error = "connected but nothing was encoded or sent";
  if (code) result.logs = logs.slice(-10);
} catch (e) {
  result = { connected: false, stage: "browser", error: String(e.message || e) };
  code = 1;
} finally {
  await browser.close().catch(() => {});
}
finish(result, code);
