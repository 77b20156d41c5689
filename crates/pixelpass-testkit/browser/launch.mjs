// Headless Debian Chromium as the browser tests need it: no network of its
// own, autoplay allowed, and WebRTC allowed on loopback (the only network in
// the test's namespace), unobfuscated. Playwright gives it a fresh profile.
import { chromium } from "playwright-core";

// `extraArgs`: more Chromium flags (e.g. --ignore-certificate-errors).
export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--autoplay-policy=no-user-gesture-required",
      "--allow-loopback-in-peer-connection",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      ...extraArgs,
    ],
  });
}
