// hls.js (from npm, in node_modules: never committed) plays an LL-HLS
// playlist in headless Chromium; prints one JSON line: frames decoded, the
// picture's mean luma (not black), hls.js's errors and its live latency.
//
//   node hls-play.mjs URL [SECONDS]
import { readFileSync } from "node:fs";
import { launchChromium } from "./launch.mjs";

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 8);
if (!url) {
  console.error("usage: node hls-play.mjs URL [SECONDS]");
  process.exit(2);
}
const hlsSource = readFileSync(new URL("./node_modules/hls.js/dist/hls.js", import.meta.url), "utf8");

const browser = await launchChromium();
let result;
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.setContent(
    '<!doctype html><video id="v" muted playsinline width="640" height="360"></video><canvas id="c" width="64" height="36"></canvas>',
  );
  await page.addScriptTag({ content: hlsSource });
  result = await page.evaluate(
    async ({ url, seconds }) => {
      const v = document.getElementById("v");
      // eslint-disable-next-line no-undef
      const H = Hls;
      if (!H.isSupported()) return { ok: false, why: "Hls.isSupported() is false (no MSE)" };
      const hls = new H({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
      const errors = [];
      hls.on(H.Events.ERROR, (_e, d) => errors.push(`${d.type}/${d.details}${d.fatal ? " (fatal)" : ""}`));
      hls.loadSource(url);
      hls.attachMedia(v);
      hls.on(H.Events.MANIFEST_PARSED, () => v.play().catch(() => {}));
      const t0 = performance.now();
      let firstFrameMs = null;
      const latencies = [];
      while (performance.now() - t0 < seconds * 1000) {
        await new Promise((r) => setTimeout(r, 250));
        if (firstFrameMs === null && v.getVideoPlaybackQuality().totalVideoFrames > 0) {
          firstFrameMs = Math.round(performance.now() - t0);
        }
        if (firstFrameMs !== null && Number.isFinite(hls.latency)) latencies.push(hls.latency);
      }
      const q = v.getVideoPlaybackQuality();
      const c = document.getElementById("c").getContext("2d");
      c.drawImage(v, 0, 0, 64, 36);
      const px = c.getImageData(0, 0, 64, 36).data;
      let sum = 0;
      for (let i = 0; i < px.length; i += 4) sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      return {
        frames: q.totalVideoFrames,
        dropped: q.droppedVideoFrames,
        currentTime: v.currentTime,
        width: v.videoWidth,
        luma: sum / (px.length / 4),
        firstFrameMs,
        // hls.js's own estimate: seconds behind the live edge (the playlist's end).
        latency: latencies,
        errors,
      };
    },
    { url, seconds },
  );
  result.pageErrors = pageErrors;
  result.ok =
    result.frames > 0 && result.luma > 16 && !(result.errors || []).some((e) => e.includes("(fatal)"));
} catch (e) {
  result = { ok: false, why: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
