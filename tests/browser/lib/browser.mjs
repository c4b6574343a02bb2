// Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by
// playwright-core (no browser download), one context per page session trusting the test
// server's self-signed certificate, the page's console kept, and on a failure a screenshot,
// the page's HTML and its console log saved in a temporary directory whose path is printed.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

/** The browser binary: Debian's `chromium` package unless CHROMIUM_BIN says otherwise. */
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/** Headless and quiet: no sandbox (CI runs as root), no GPU, no calls home, no QUIC. */
export const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Starts the browser (playwright-core gives it a fresh temporary profile). */
export function launch() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(CHROMIUM + " is missing: apt-get install -y chromium (tests/run-all.sh does it)");
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 60000 });
}

const format = (e) => `[${e.kind} ${e.type}] ${e.text}${e.where ? " (" + e.where + ")" : ""}`;

/**
 * A fresh browser context and page. The context accepts the server's self-signed
 * certificate (`ignoreHTTPSErrors`: the test server's CA is new for every run, and this
 * applies to every request of the context, WebSockets included, without restarting the
 * browser per server). `permissions` (for example `["notifications"]`) are granted to
 * `origin`. Everything the page logs, every uncaught exception and every failed request is
 * kept in `session.log`; `session.errors()` is the console errors and uncaught exceptions.
 */
export async function openPage(browser, { permissions = [], origin } = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  if (permissions.length) await context.grantPermissions(permissions, origin ? { origin } : {});
  const page = await context.newPage();
  const log = [];
  page.on("console", (m) => {
    const { url, lineNumber } = m.location();
    log.push({ kind: "console", type: m.type(), text: m.text(), where: url ? url + ":" + lineNumber : "" });
  });
  page.on("pageerror", (e) => log.push({ kind: "pageerror", type: "error", text: String(e.stack || e) }));
  page.on("requestfailed", (r) => {
    log.push({ kind: "request", type: "failed", text: r.method() + " " + r.url() + ": " + r.failure()?.errorText });
  });
  return {
    context,
    page,
    log,
    errors: () => log.filter((e) => e.type === "error"),
    close: () => context.close(),

    /**
     * Runs `fn`; if it throws, saves a full-page screenshot, the page's HTML and its log
     * under a new temporary directory, reports the path (stderr and a test diagnostic when
     * `t` is the test's context), and rethrows.
     */
    async run(t, fn) {
      try {
        return await fn();
      } catch (error) {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "warbler-browser-"));
        const name = (t?.name || "page").replace(/[^a-z0-9]+/gi, "-").slice(0, 80);
        try { await page.screenshot({ path: path.join(dir, name + ".png"), fullPage: true, timeout: 5000 }); } catch (_) { /* page gone */ }
        try { fs.writeFileSync(path.join(dir, name + ".html"), await page.content()); } catch (_) { /* page gone */ }
        fs.writeFileSync(path.join(dir, name + ".log"), log.map(format).join("\n") + "\n");
        const note = "screenshot, HTML and page log of the failed test: " + dir;
        if (t?.diagnostic) t.diagnostic(note);
        else console.error(note);
        throw error;
      }
    },
  };
}
